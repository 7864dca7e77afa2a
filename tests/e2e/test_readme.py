"""The README's Python code runs as written: the API example and the plugin example."""

import shutil

import pytest

from tests.support import ROOT
from tests.support.readme import readme_blocks, readme_plugin_example


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(readme_blocks("python"))))
def test_readme_python_block_runs_as_written(index, tmp_path, monkeypatch, capsys):
    """Each Python block of the README, executed as written in a fresh directory holding the
    repository's tasks/ (a new user's checkout), must run and leave what it says."""
    shutil.copytree(ROOT / "tasks", tmp_path / "tasks")
    monkeypatch.chdir(tmp_path)
    code = readme_blocks("python")[index]
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    if "compressflow.run(" in code:  # the quickstart, as the README promises it
        tree = namespace["tree"]
        assert 0.90 <= float(tree["teacher"]["accuracy"]) <= 1.0
        assert float(tree["test"]["accuracy"]) == pytest.approx(float(tree["teacher"]["accuracy"]))
        assert set(namespace["ledger"]["status"]) == {"ok"} and (namespace["ledger"]["energy_kwh"] > 0).all()
        assert (tmp_path / "runs" / "quickstart" / "results.zarr").is_dir()
    if "compressflow.submit(" in code:  # the teacher cancelled seconds into its 15 epochs, and so its test
        tree = namespace["tree"]
        assert list(tree["tasks"]["status"].values) == ["cancelled", "cancelled"]
        assert str(tree["test"]["status"].values) == "cancelled" and namespace["study"].state == "cancelled"
        assert (tmp_path / "runs" / "interactive" / "results.zarr").is_dir()


@pytest.mark.slow
def test_readme_plugin_example_runs_as_written(tmp_path, monkeypatch, fresh_names, capsys):
    """The README's command, on the embedded cluster: the file reaches its worker processes."""
    import shlex

    import compressflow
    from compressflow.cli import main

    ops, spec, command = readme_plugin_example()
    (tmp_path / "my_ops.py").write_text(ops + "\n")
    (tmp_path / "my_study.yaml").write_text(spec + "\n")
    monkeypatch.chdir(tmp_path)
    assert main([*shlex.split(command)[1:], "--quiet"]) == 0, capsys.readouterr().err
    tree = compressflow.open_results(tmp_path / "runs" / "my_study")
    assert set(tree["tasks"]["status"].values) == {"ok"}
    probe = tree["probe"].to_dataset()
    assert probe.sizes["seed"] == 2 and (probe.params == 874).all()  # (16*32 + 32) + (32*10 + 10)
    assert float(probe.accuracy.min()) > 0.6  # 10 epochs of the shared loop on digits (chance: 0.1)
    assert float(probe.val_accuracy.min()) > 0.6
    assert int(tree["teacher"]["params"]) == 874 and float(tree["teacher"]["accuracy"]) > 0.3  # 0.55 here
