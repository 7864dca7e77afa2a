"""The README is true without running a study: its two set-up commands are the ones CI runs, and
its spec and plugin examples validate."""

import re

import pytest
import yaml

from tests.support import ROOT
from tests.support.readme import readme_blocks, readme_plugin_example


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


def test_readme_has_python_and_spec_blocks():
    assert readme_blocks("python"), "the README's Python API section lost its code block"
    assert any("stages:" in b for b in readme_blocks("yaml"))


@pytest.mark.parametrize("index", [i for i, b in enumerate(readme_blocks("yaml")) if "stages:" in b])
def test_readme_spec_example_validates(index):
    from compressflow import load_spec

    spec = load_spec(yaml.safe_load(readme_blocks("yaml")[index]))
    assert spec.order()


def test_readme_plugin_example_is_short_and_validates(tmp_path, fresh_names):
    from compressflow import MODELS, OPS, load_spec

    ops, spec, command = readme_plugin_example()
    assert len(ops.splitlines()) <= 32 and command == "compressflow run my_study.yaml --plugin my_ops.py"
    (tmp_path / "my_ops.py").write_text(ops + "\n")
    (tmp_path / "my_study.yaml").write_text(yaml.safe_dump({**yaml.safe_load(spec), "plugins": ["my_ops.py"]}))
    loaded = load_spec(tmp_path / "my_study.yaml")
    assert set(loaded.order()) == {"probe", "teacher"} and loaded.plugins == (str(tmp_path / "my_ops.py"),)
    assert "probe" in OPS and "tiny_mlp" in MODELS
