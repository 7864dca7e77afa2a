"""Every notebook runs end to end on a real Jupyter kernel (nbclient), with its parameter
cell replaced by small settings: it starts a local cluster, runs its pipeline and analyses
and plots the returned DataTree. Then it runs again, top to bottom in the same kernel into
the same ``OUT`` (what "Run All" a second time does): every task is reused, and every cell
still works (a plot of a run that ran nothing is still a picture). The second run keeps the
first one's cluster (its ``local_cluster`` cell and the first run's ``cluster.close()`` cell are
skipped), which saves starting and stopping one per notebook in the suite's time.
"""

from __future__ import annotations

import copy
import re

import nbformat
import pytest
from nbclient import NotebookClient

import compressflow
from tests.support import ROOT

pytestmark = pytest.mark.slow  # each notebook runs a pipeline on a real kernel and cluster

NOTEBOOKS = ROOT / "notebooks"

SMALL = {
    "01_quickstart": "EPOCHS = 1\nIMAGE_SIZE = 8\nN_WORKERS = 1",  # its two tasks run one after the other
    "02_stkd": ("TEMPERATURES = [2, 8]\nSEEDS = [0]\nLOSSES = ['hkd']\nEPOCHS = 1\nTEACHER_EPOCHS = 1\n"
                "STUDENT = 'wrn_16_1'\nIMAGE_SIZE = 8\nN_WORKERS = 2"),
    "03_blockwise": ("LAYERS = ['layer1.0.conv1', 'layer4.1.conv2']\nEPOCHS = 1\nTEACHER_EPOCHS = 1\nIMAGE_SIZE = 8\n"
                     "N_WORKERS = 2"),
    "04_pruning_svcca": ("METHODS = ['magnitude']\nSPARSITIES = [0.3, 0.9]\nSEEDS = [0]\nEPOCHS = 1\n"
                         "IMAGE_SIZE = 8\nPROBE = 64\nN_WORKERS = 2"),
    # long enough that the grid is still training when the notebook cancels it
    "05_interactive_session": "EPOCHS = 1\nSTUDENT_EPOCHS = 4\nIMAGE_SIZE = 8\nN_WORKERS = 2",
}


def run_twice(name: str, out) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    """Execute notebook ``name`` with its SMALL parameters and ``OUT = out``, then execute it
    again in the same kernel on the same cluster (a second kernel and cluster would pay their
    start, imports and close again); the two executed copies (a skipped cell has no outputs)."""
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    params = [c for c in book.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "one cell tagged 'parameters'"
    params[0].source = SMALL[name] + f"\nOUT = {str(out)!r}"
    first, second = book, copy.deepcopy(book)
    client = NotebookClient(first, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.reset_execution_trackers()
    with client.setup_kernel():
        for run, skipped in ((first, "cluster.close()"), (second, "local_cluster(")):
            assert sum(skipped in c.source for c in run.cells) == 1
            client.nb = run  # execute_cell stores each executed cell in client.nb
            for index, cell in enumerate(run.cells):  # raises CellExecutionError on a cell's error
                if cell.cell_type == "code" and skipped not in cell.source:
                    client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
    return first, second


def outputs(book) -> list:
    return [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def text(book) -> str:
    return "".join(o.get("text", "") for o in outputs(book) if o.output_type == "stream")


def drew(book) -> bool:
    return any("image/png" in o.get("data", {}) for o in outputs(book))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_executes_and_runs_again(name, tmp_path):
    first, second = run_twice(name, tmp_path / "run")
    assert "dashboard: http://127.0.0.1:" in text(first)
    for book in (first, second):
        assert not [o for o in outputs(book) if o.output_type == "error"]
        assert drew(book), "the notebook draws its plots"
    # the second run reused every task of the first and wrote its results
    ledger = compressflow.open_results(tmp_path / "run")["tasks"].to_dataset()
    assert ledger.sizes["task"] >= 2 and ledger["reused"].values.all() and set(ledger["status"].values) == {"ok"}
    if name == "03_blockwise":  # the Gantt chart of a run that reused everything is still an image
        (gantt,) = [c for c in second.cells if "plot_gantt(tree" in c.source]
        assert "image/png" in gantt.outputs[0]["data"]
    if name == "05_interactive_session":  # the interactive story really happened
        once = text(first)
        widgets = [o for o in outputs(first) if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
        assert len(widgets) == 1, "study.progress() shows its widget once"
        assert "while the study is running" in once  # the notebook computed while the study ran
        assert re.search(r"\bkd\s+cancelled\b", once)  # the ledger after the cancel: the grid was cancelled ...
        assert "teacher        reused 1, ran 0" in once  # ... and the re-submission reused the teacher
        assert "kd             reused 0, ran 2, failed 0, cancelled 0" in once  # and finished the grid
        assert "kd             reused 2, ran 0, failed 0, cancelled 0" in text(second)  # the second run: all reused
