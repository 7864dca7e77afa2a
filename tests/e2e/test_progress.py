"""``study.progress()`` in a plain script whose stderr goes to a file (a batch job, ``nohup``,
CI): per-stage progress lines, with no logging configured, although ``submit`` (quiet by
default) keeps a warnings-only console open for the study; ``run()`` ends with the tasks line."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SPEC = {"name": "lines", "stages": {"slow": {"op": "wait", "params": {"seconds": 0.3}, "sweep": {"label": [0, 1]}},
                                    "after": {"op": "wait", "params": {"seconds": 0.0, "label": 9}}}}

SCRIPT = textwrap.dedent("""
    import sys
    import compressflow

    spec, address, out = eval(sys.argv[1]), sys.argv[2], sys.argv[3]
    study = compressflow.submit(spec, cluster=address, out=out)
    study.progress()
    study.result()
    compressflow.run(spec, cluster=address, out=out)  # again: every task reused
""")


def test_progress_lines_reach_a_file_and_run_says_what_it_reused(client, tmp_path):
    log = tmp_path / "stderr.log"
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-c", SCRIPT, repr(SPEC), client.scheduler.address, str(tmp_path / "run")],
                              stdout=subprocess.DEVNULL, stderr=err, timeout=120, check=False)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    lines = text.splitlines()
    # the last line per stage once the study ended (a file gets plain lines: no carriage returns)
    assert "  [slow] done 2/2 · running 0 · pending 0 · reused 0 · ran 2" in "\n".join(lines)
    assert any(line.startswith("  [after] done 1/1 · running 0 · pending 0 · reused 0 · ran 1 · ") for line in lines)
    assert "\r" not in text
    assert lines[-1].startswith("compressflow: study 'lines' done: tasks: reused 3, ran 0; results in ")
