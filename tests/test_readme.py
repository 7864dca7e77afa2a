"""The README is true: its two set-up commands are the ones CI runs, its Python code runs as
written, and its spec examples validate."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_exactly_two_setup_commands_run_by_ci():
    cmds = setup_commands()
    assert len(cmds) == 2
    assert "compressflow run tasks/quickstart.yaml" in cmds[0]
    assert "pytest" in cmds[1] and ".[test]" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text()
    for cmd in cmds:
        assert cmd in ci, cmd
    assert (ROOT / "tasks" / "quickstart.yaml").exists()


def readme_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_has_python_and_spec_blocks():
    assert readme_blocks("python"), "the README's Python API section lost its code block"
    assert any("stages:" in b for b in readme_blocks("yaml"))


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
    if "compressflow.submit(" in code:  # cancelled at once: the teacher finishes, its test stage never starts
        tree = namespace["tree"]
        assert list(tree["tasks"]["status"].values) == ["ok", "cancelled"]
        assert str(tree["test"]["status"].values) == "cancelled" and namespace["study"].state == "cancelled"
        assert (tmp_path / "runs" / "interactive" / "results.zarr").is_dir()


@pytest.mark.parametrize("index", [i for i, b in enumerate(readme_blocks("yaml")) if "stages:" in b])
def test_readme_spec_example_validates(index):
    from compressflow import load_spec

    spec = load_spec(yaml.safe_load(readme_blocks("yaml")[index]))
    assert spec.order()


def plugin_example() -> tuple[str, str, str]:
    """The "Writing your own op" section's file, spec and command, as written."""
    section = (ROOT / "README.md").read_text().split("## Writing your own op", 1)[1].split("\n## ", 1)[0]
    [ops] = re.findall(r"```python my_ops\.py\n(.+?)\n```", section, flags=re.S)
    [spec] = re.findall(r"```yaml my_study\.yaml\n(.+?)\n```", section, flags=re.S)
    [command] = re.findall(r"```bash\n(compressflow run .+?)\n```", section)
    return ops, spec, command


def test_readme_plugin_example_is_short_and_validates(tmp_path, fresh_names):
    from compressflow import MODELS, OPS, load_spec

    ops, spec, command = plugin_example()
    assert len(ops.splitlines()) <= 32 and command == "compressflow run my_study.yaml --plugin my_ops.py"
    (tmp_path / "my_ops.py").write_text(ops + "\n")
    (tmp_path / "my_study.yaml").write_text(yaml.safe_dump({**yaml.safe_load(spec), "plugins": ["my_ops.py"]}))
    loaded = load_spec(tmp_path / "my_study.yaml")
    assert set(loaded.order()) == {"probe", "teacher"} and loaded.plugins == (str(tmp_path / "my_ops.py"),)
    assert "probe" in OPS and "tiny_mlp" in MODELS


@pytest.mark.slow
def test_readme_plugin_example_runs_as_written(tmp_path, monkeypatch, fresh_names, capsys):
    """The README's command, on the embedded cluster: the file reaches its worker processes."""
    import shlex

    import compressflow
    from compressflow.cli import main

    ops, spec, command = plugin_example()
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
