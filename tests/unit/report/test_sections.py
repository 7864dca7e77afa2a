"""Report sections are chosen by the ops present in the run's ledger, each section tied to the
op families it reports on; the one Pareto front."""

from __future__ import annotations

import re

import numpy as np
import pytest

from compressflow.report import SECTIONS, pareto_front, write_report
from compressflow.report.kd import kd_section
from compressflow.report.pruning import pruning_section
from compressflow.report.sections import SectionRegistry, ops_present, stage_groups
from tests.unit.report.synthetic import results_tree


def names(tree) -> list[str]:
    return [s.name for s in SECTIONS.for_tree(tree)]


def test_train_only_run_has_no_pruning_or_kd_section(tmp_path):
    tree = results_tree("teacher")
    assert ops_present(tree) == {"train"}
    assert names(tree) == ["stages_section", "search_section", "run_plots_section"]
    text = write_report(tree, tmp_path).read_text()
    assert re.findall(r"^## .*", text, flags=re.M) == ["## Stages"]
    assert not list((tmp_path / "report").glob("*sparsity*"))


def test_prune_stage_brings_the_pruning_section(tmp_path):
    tree = results_tree("teacher", "pruned")
    assert names(tree) == ["stages_section", "search_section", "pruning_section", "run_plots_section"]
    text = pruning_section(tree, tmp_path)
    acc = tree["pruned"]["accuracy"].sel({"method": "random", "sparsity": 0.5})
    assert text.startswith("## pruned: accuracy vs sparsity\n\n| method | 25 % | 50 % |")
    assert f"| {100 * float(acc.mean()):.2f} ± {100 * float(acc.std(ddof=1)):.2f} |" in text
    assert "representation similarity" not in text and (tmp_path / "pruned_accuracy_vs_sparsity.png").is_file()


def test_prune_stage_not_swept_over_sparsity_shows_nothing(tmp_path):
    tree = results_tree("teacher", "pruned")
    tree["pruned"] = tree["pruned"].to_dataset().isel(sparsity=0, drop=True)
    assert "pruning_section" in names(tree)  # the op ran ...
    assert pruning_section(tree, tmp_path) is None  # ... but there is no curve to draw
    assert "sparsity" not in write_report(tree, tmp_path).read_text()


def test_full_report_orders_sections_and_keeps_run_plots_to_the_html(tmp_path):
    tree = results_tree("teacher", "grid", "stoch", "pruned", "similarity")
    assert ops_present(tree) == {"train", "distill", "prune", "svcca"}
    md = write_report(tree, tmp_path).read_text()
    assert re.findall(r"^## .*", md, flags=re.M) == [
        "## Stages", "## kd_comparison: grid search vs stochastic temperature", "## pruned: accuracy vs sparsity",
        "## similarity: representation similarity"]
    assert md.startswith("# synthetic\n\n## Stages\n\n| stage | op |") and md.endswith("(similarity_svcca_heatmap.png)\n")
    page = (tmp_path / "report" / "report.html").read_text()
    heads = re.findall(r"<h2>(.*?)</h2>", page)
    assert heads[:4] == [h[3:] for h in re.findall(r"^## .*", md, flags=re.M)]
    assert heads[4:] == ["Accuracy vs CO₂ over all tasks", "Energy per stage", "Tasks per worker",
                         "Energy vs epoch and vs time", "Parallelism per stage"]
    assert "Energy per stage" not in md


def test_distill_without_a_comparison_has_no_kd_text(tmp_path):
    tree = results_tree("teacher", "grid")  # a grid alone: no kd_comparison group
    assert "kd_section" in names(tree) and kd_section(tree, tmp_path) is None


def test_unknown_section_op_errors_clearly():
    reg = SectionRegistry("report section")
    with pytest.raises(ValueError, match=r"^report section 'typo': ops: unknown op 'prnue' \(did you mean 'prune'\?\); valid choices: .*\bprune\b"):
        reg.register(lambda tree, folder: "x", name="typo", ops=("prune", "prnue"))
    assert "typo" not in reg


def test_registered_section_is_chosen_by_its_op_and_duplicates_raise(tmp_path):
    reg = SectionRegistry("report section")

    @reg.register(ops=("prune",), order=5)
    def mine(tree, folder):
        return "## mine"

    @reg.register(ops=None, order=1)
    def always(tree, folder):
        return None

    assert mine(None, None) == "## mine"  # the decorator hands the function back
    assert [s.name for s in reg.for_tree(results_tree("teacher"))] == ["always"]
    assert [s.name for s in reg.for_tree(results_tree("teacher", "pruned"))] == ["always", "mine"]
    assert reg.get("mine").ops == ("prune",) and not reg.get("mine").html_only
    with pytest.raises(ValueError, match="report section 'mine' is already registered"):
        reg.register(mine, ops=("train",))


def test_stage_groups_are_the_op_stages_by_name():
    tree = results_tree("teacher", "grid", "stoch", "pruned")
    assert [n for n, _ in stage_groups(tree, ("distill",))] == ["grid", "stoch"]
    assert [n for n, _ in stage_groups(tree, ("prune", "train"))] == ["pruned", "teacher"]


def test_pareto_front():
    pts = [(3.0, 70.0), (1.0, 50.0), (2.0, 40.0), (3.0, 60.0), (np.nan, 99.0), (4.0, 70.0), (0.5, np.inf)]
    assert pareto_front(pts) == [(1.0, 50.0), (3.0, 70.0)]
    assert pareto_front([]) == []
