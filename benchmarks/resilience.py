"""Worker failures, measured: the same pipeline runs N times on a fresh 2-worker cluster, and
in each run one worker, chosen at random, is killed with SIGKILL at a random moment while tasks
run. Printed: how many runs completed with a complete, correct ledger (every task once,
status ok, one record each, each result equal to the task's own input) and the extra wall
time the failures cost against undisturbed runs measured in the same invocation.

Usage: ``python benchmarks/resilience.py [--runs 10] [--tasks 8] [--seconds 1.0]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path


def spec(tasks: int, seconds: float) -> dict:
    return {"name": "resilience", "stages": {"w": {"op": "wait", "params": {"seconds": seconds, "busy": True},
                                                  "sweep": {"label": list(range(tasks))}}}}


def one_run(out: Path, tasks: int, seconds: float, kill: bool, rng: random.Random) -> tuple[float, bool, int]:
    """Wall time, whether the ledger is complete and correct, and the number of retried tasks."""
    from distributed import Client

    import compressflow
    from compressflow.engine.cluster import local_cluster

    with local_cluster(n_workers=2, dashboard_address=":0") as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        result: dict = {}

        def go() -> None:
            try:
                result["tree"] = compressflow.run(spec(tasks, seconds), cluster=client, out=out, show_progress=False)
            except Exception as exc:  # a run that does not finish counts as a failure
                result["error"] = exc

        t0 = time.perf_counter()
        runner = threading.Thread(target=go)
        runner.start()
        if kill:  # once tasks run, at a random moment inside the stage's expected length
            while runner.is_alive() and not (out / "attempts").is_dir():
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.8) * tasks * seconds / 2)
            os.kill(pids[rng.choice(sorted(pids))], signal.SIGKILL)
        runner.join()
        wall = time.perf_counter() - t0
    tree = result.get("tree")
    if tree is None:
        print(f"  run did not finish: {type(result.get('error')).__name__}: {result.get('error')}")
        return wall, False, 0
    ledger = tree["tasks"].to_dataset()
    labels = sorted(json.loads(p)["label"] for p in ledger.point.values)
    records = list((out / "records").glob("*.json"))
    stage = tree["w"].to_dataset()
    ok = (labels == list(range(tasks)) and bool((ledger.status == "ok").all()) and len(records) == tasks
          and list(stage.label.values) == list(range(tasks)) and bool((stage.elapsed_s >= seconds * 0.95).all()))
    return wall, ok, int((ledger.attempts > 1).sum())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        base = [one_run(Path(tmp) / f"calm{i}", args.tasks, args.seconds, False, rng)[0] for i in range(3)]
        results = [one_run(Path(tmp) / f"kill{i}", args.tasks, args.seconds, True, rng) for i in range(args.runs)]
    complete = sum(ok for _, ok, _ in results)
    calm = statistics.median(base)
    killed = statistics.median(w for w, _, _ in results)
    print(f"{args.runs} runs of {args.tasks} tasks x {args.seconds:g} s on 2 workers, one worker killed (SIGKILL) "
          f"at a random moment in each")
    print(f"complete and correct ledgers: {complete}/{args.runs}; tasks retried per run: "
          f"{[r for _, _, r in results]}")
    print(f"median wall time: undisturbed {calm:.2f} s (3 runs), with a kill {killed:.2f} s -> extra "
          f"{killed - calm:.2f} s ({killed / calm:.2f}x)")
    return {"runs": args.runs, "complete": complete, "calm_s": calm, "killed_s": killed}


if __name__ == "__main__":
    main()
