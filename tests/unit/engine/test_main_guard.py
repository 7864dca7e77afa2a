"""A script that calls compressflow.run() at its top level, without the ``__main__`` guard: one
line saying to add the guard, before any worker starts (no lock error from a worker's re-run
of the script, no "Nanny failed to start" traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from compressflow.engine.main_guard import unguarded_line

ROOT = Path(__file__).resolve().parents[3]


def test_a_script_without_the_main_guard_gets_one_line_naming_the_guard(tmp_path):
    script = tmp_path / "quick.py"
    script.write_text(f"import compressflow\n\ntree = compressflow.run({str(ROOT / 'tasks' / 'quickstart.yaml')!r}, "
                      f"out={str(tmp_path / 'runs' / 'q')!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert output.splitlines() == [output.strip()], output  # one line
    assert output.startswith(f"compressflow: error: {script}:3: ") and 'if __name__ == "__main__":' in output
    assert "Traceback" not in output and "in use by another" not in output and "Nanny" not in output


def test_only_lines_outside_the_guard_are_unguarded():
    source = ("import compressflow\n"
              "def main():\n"
              "    compressflow.run('a.yaml')\n"
              "if '__main__' == __name__:\n"
              "    main()\n"
              "main()\n")
    assert [unguarded_line(source, n) for n in (5, 6)] == [False, True]
    # another condition is no guard
    assert unguarded_line("import x\nif __name__ == 'x':\n    x.run()\n", 3)
