"""The README's two set-up commands are the ones CI runs, and its quickstart spec exists."""

import re
from pathlib import Path

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
