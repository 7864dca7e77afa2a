"""Where compressflow's per-task time goes: ``compressflow.run`` of N ``wait`` tasks vs N plain
``client.submit`` calls of the same sleep on the same warm worker, in one run; the client's
phases and the worker's ``execute_task`` time per task (``--profile``: a cProfile of the worker
side, top entries by cumulative time). Benchmarks are not tests: this prints, it asserts nothing.

Usage: ``python benchmarks/task_cost.py [--tasks 200] [--seconds 0.01] [--profile]``
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from distributed import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compressflow
from compressflow.api import study as R  # where run() does its work (submit + Study)
from compressflow.engine.cluster import local_cluster

ap = argparse.ArgumentParser()
ap.add_argument("--tasks", type=int, default=200)
ap.add_argument("--seconds", type=float, default=0.01)
ap.add_argument("--profile", action="store_true")
ap.add_argument("--top", type=int, default=40)
args = ap.parse_args()

phases = {}
def timed(mod, name):
    fn = getattr(mod, name)
    def wrap(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            phases[name] = phases.get(name, 0) + time.perf_counter() - t
    setattr(mod, name, wrap)
for n in ("check_results_store", "check_data", "expand", "plan_resume", "build_graph", "_check_reused_records",
          "install_worker_plugin", "check_resources", "submit_graph", "build_results", "save_results"):
    if hasattr(R, n):  # what this version of the runner has
        timed(R, n)

def worker_setup(profile):
    import cProfile, time as _t
    from compressflow.engine import execute as E
    orig = E.execute_task
    state = {"n": 0, "t": 0.0, "prof": cProfile.Profile() if profile else None}
    def wrapped(*a, **k):
        t = _t.perf_counter()
        p = state["prof"]
        if p: p.enable()
        try:
            return orig(*a, **k)
        finally:
            if p: p.disable()
            state["n"] += 1; state["t"] += _t.perf_counter() - t
    wrapped.__wrapped__ = orig
    E.execute_task = wrapped
    E._bench_state = state
def worker_report(top):
    import io, pstats
    from compressflow.engine import execute as E
    s = E._bench_state
    out = f"worker: {s['n']} execute_task calls, {s['t']/max(s['n'],1)*1e3:.2f} ms each (task body included)\n"
    if s["prof"]:
        buf = io.StringIO(); pstats.Stats(s["prof"], stream=buf).sort_stats("cumulative").print_stats(top); out += buf.getvalue()
    return out

def main():
    import overhead
    with local_cluster(n_workers=1, torch_threads=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        client.gather(client.submit(time.sleep, 0, pure=False))
        client.run(overhead.warm_worker)
        # warm-up run: the worker's meter, data cache, imports
        spec = lambda n, tag: {"name": "overhead", "data": overhead.DATA, "stages": {"noop": {"op": "wait",
                 "params": {"seconds": args.seconds}, "sweep": {"label": [tag * 100000 + i for i in range(n)]}}}}
        with tempfile.TemporaryDirectory() as out:
            compressflow.run(spec(5, 9), cluster=client, out=out, show_progress=False)
        client.run(worker_setup, args.profile)
        phases.clear()
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            compressflow.run(spec(args.tasks, 1), cluster=client, out=out, show_progress=False)
            runner = time.perf_counter() - t0
        t0 = time.perf_counter()
        client.gather([client.submit(time.sleep, args.seconds, pure=False) for _ in range(args.tasks)])
        plain = time.perf_counter() - t0
        rep = client.run(worker_report, args.top)
    n = args.tasks
    print(f"{n} tasks of {args.seconds*1e3:g} ms, 1 warm worker: compressflow {runner/n*1e3:.2f} ms/task, "
          f"plain client.submit {plain/n*1e3:.2f} ms/task -> overhead {(runner-plain)/n*1e3:.2f} ms/task "
          f"(ratio {runner/plain:.2f}x plain Dask)")
    print("client phases (ms/task): " + ", ".join(f"{k} {v/n*1e3:.2f}" for k, v in phases.items()))
    for v in rep.values(): print(v)

if __name__ == "__main__":
    main()
