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
    if "compressflow.run(" in code:
        tree = namespace["tree"]
        assert 0.5 < float(tree["teacher"]["accuracy"]) <= 1.0
        assert set(namespace["ledger"]["status"]) == {"ok"}
        assert (tmp_path / "runs" / "quickstart" / "results.zarr").is_dir()


@pytest.mark.parametrize("index", [i for i, b in enumerate(readme_blocks("yaml")) if "stages:" in b])
def test_readme_spec_example_validates(index):
    from compressflow import load_spec

    spec = load_spec(yaml.safe_load(readme_blocks("yaml")[index]))
    assert spec.order()
