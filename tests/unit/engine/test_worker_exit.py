"""The embedded cluster's worker processes freeze the garbage collector's objects at exit
(compressflow.engine.worker_exit), so the shutdown's collections do not traverse torch's
millions of objects and the nanny does not kill the process after 4 s."""

from __future__ import annotations

import os
import subprocess
import sys

from compressflow.engine.cluster import WORKER_PRELOADS
from tests.support import ROOT

CODE = """
import atexit, gc
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0))  # runs after dask_setup's (LIFO)
from compressflow.engine.worker_exit import dask_setup
print("frozen before:", gc.get_freeze_count() > 0)
dask_setup(None)
"""


def test_a_worker_process_freezes_its_objects_when_it_exits():
    assert "compressflow.engine.worker_exit" in WORKER_PRELOADS  # the embedded cluster's workers run it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert proc.stdout.splitlines() == ["frozen before: False", "frozen at exit: True"]
