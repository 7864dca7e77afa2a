"""What a search's driver costs per trial, measured side by side in one run.

The same N tasks (the synthetic ``objective`` op, one epoch each, ``x`` on an N-point grid) run
twice on one two-worker cluster: as a plain grid stage (``sweep: {x: [...]}``: all tasks
submitted at once) and as a ``search: {strategy: grid}`` over the same points (Optuna asks and
is told every trial on the client; tasks submitted in batches of as many as there are
workers, each batch told once it finished). Repeated alternately; prints each wall time, the
ratio and the overhead per trial. The search's batches also cost parallelism (a batch waits
for its slowest task), which is part of what this measures.

Usage: ``python benchmarks/search_overhead.py [--trials 40] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import compressflow
from compressflow.engine.cluster import local_cluster

DATA = {"dataset": "digits", "image_size": 8, "channels": 1}


def specs(n: int) -> tuple[dict, dict]:
    xs = [round(i / (n - 1), 6) for i in range(n)]
    params = {"epochs": 1, "batch_size": 256}
    grid = {"name": "plain", "data": DATA, "stages": {"s": {"op": "objective", "params": params, "sweep": {"x": xs}}}}
    search = {"name": "searched", "data": DATA, "stages": {"s": {"op": "objective", "params": params, "search": {
        "strategy": "grid", "space": {"x": {"choices": xs}}}}}}
    return grid, search


def timed(spec: dict, client) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        tree = compressflow.run(spec, cluster=client, out=out, show_progress=False)
        seconds = time.perf_counter() - t0
        assert (tree["tasks"]["status"] == "ok").all()
    return seconds


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    grid, search = specs(args.trials)
    from distributed import Client

    with local_cluster(n_workers=2, dashboard_address=":0", security="none") as cluster, Client(cluster) as client:
        timed({**grid, "stages": {"s": {**grid["stages"]["s"], "sweep": {"x": [0.5, 0.6]}}}}, client)  # warm workers
        plain, searched = [], []
        for _ in range(args.repeats):
            plain.append(timed(grid, client))
            searched.append(timed(search, client))
    p, s = statistics.median(plain), statistics.median(searched)
    per_trial_ms = 1000 * (s - p) / args.trials
    print(f"{args.trials} one-epoch tasks, 2 workers, median of {args.repeats}")
    print(f"  plain grid stage   {p:7.2f} s   ({', '.join(f'{x:.2f}' for x in plain)})")
    print(f"  search: grid       {s:7.2f} s   ({', '.join(f'{x:.2f}' for x in searched)})")
    print(f"  ratio search/plain {s / p:7.3f}   overhead {per_trial_ms:.1f} ms per trial")
    return {"plain_s": p, "search_s": s, "ratio": s / p, "per_trial_ms": per_trial_ms}


if __name__ == "__main__":
    main()
