"""Scheduling policies for blockwise distillation, simulated with sleep tasks on a real cluster.

One ``time.sleep(d)`` task per VGG16 conv layer (13 tasks) on a ``LocalCluster`` of 4
single-threaded worker processes; sleeps need no CPU, so 4 workers are fine on a small
machine. The per-layer times are *shaped after* the uneven VGG16 times in the blockwise
distillation paper's figure (first layers ~3.5x the last) — not measured here — and scaled
by ``--scale``.

Per policy (``compressflow.engine.scheduling.assign``): round robin and bin packing pin each task to
its assigned worker (``workers=[w], allow_other_workers=False``); work stealing submits
unrestricted and lets Dask's scheduler place and steal. Wall time runs from the first submit
until every task is done, so it includes Dask's dispatch cost (tens of ms).

Dask's scheduler runs with ``worker-saturation`` 1.0 by default here (``--worker-saturation``
changes it): each single-threaded worker then holds only the task it is running and the rest
wait on the scheduler, so work stealing becomes greedy list scheduling in submission order.
Dask's own default (1.1, i.e. two tasks per one-thread worker) pre-commits a second task to a
busy worker, which made work stealing vary between ~1.02x and ~1.12x the lower bound here.

Targets: work stealing and bin packing within 10 % of the lower bound; bin packing ≤ round robin.

Usage: ``python benchmarks/scheduling_sim.py [--scale 1.0] [--repeats 1] [--worker-saturation 1.0]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import dask
from distributed import Client, LocalCluster, wait

VGG16_SECONDS = [1.40, 1.40, 1.10, 1.10, 0.80, 0.80, 0.80, 0.55, 0.55, 0.55, 0.40, 0.40, 0.40]


def run_policy(client: Client, policy: str, durations: dict[str, float], workers: list[str], tag: str) -> dict:
    """Submit one sleep task per layer under ``policy``; return measured and predicted makespans."""
    from compressflow.engine.scheduling import assign, makespan

    assignment = assign(policy, durations, workers)
    t0 = time.perf_counter()
    futures = []
    for key, d in durations.items():
        # Keys carry policy and repeat so an earlier round's futures never collide.
        where = {} if assignment is None else {"workers": [assignment[key]], "allow_other_workers": False}
        futures.append(client.submit(time.sleep, d, key=f"{tag}/{key}", pure=False, **where))
    wait(futures)
    measured = time.perf_counter() - t0
    who = client.who_has(futures)
    placed = {f.key: who[f.key][0] for f in futures}
    if assignment is not None:  # the restriction held: every task ran where it was assigned
        assert all(placed[f"{tag}/{k}"] == w for k, w in assignment.items()), placed
    client.cancel(futures)
    return {
        "measured": measured,
        "predicted": None if assignment is None else makespan(assignment, durations),
        "tasks_per_worker": sorted(list(placed.values()).count(w) for w in workers),
    }


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    # Imported here, not at module level: worker processes are spawned and re-import this
    # script, and importing the compressflow package (torch) there would slow their start.
    from compressflow.engine.scheduling import POLICIES, lower_bound

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every task time (default 1.0)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds per policy; the median is shown")
    parser.add_argument("--worker-saturation", type=float, default=1.0, help="Dask scheduler setting (default 1.0)")
    args = parser.parse_args(argv)
    durations = {f"layer-{i}": s * args.scale for i, s in enumerate(VGG16_SECONDS)}

    with dask.config.set({"distributed.scheduler.worker-saturation": args.worker_saturation}), \
            LocalCluster(n_workers=4, threads_per_worker=1, processes=True, dashboard_address=":0",
                         host="127.0.0.1") as cluster, Client(cluster) as client:
        client.wait_for_workers(4)
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        # Warm up: ship time.sleep to every worker once so the first policy pays no extra.
        wait([client.submit(time.sleep, 0, pure=False, workers=[w]) for w in workers])
        bound = lower_bound(durations, len(workers))
        results = {p: [run_policy(client, p, durations, workers, f"{p}-{r}") for r in range(args.repeats)]
                   for p in POLICIES}

    print(f"{len(durations)} sleep tasks (VGG16-shaped, scale {args.scale}), total {sum(durations.values()):.2f} s, "
          f"{len(workers)} workers, worker-saturation {args.worker_saturation}, {args.repeats} round(s)")
    print(f"{'policy':<14} {'measured s':>10} {'predicted s':>11} {'lower bd s':>10} {'meas/LB':>8}  range meas/LB")
    for p, runs in results.items():
        measured = statistics.median(r["measured"] for r in runs)
        pred = "n/a" if runs[0]["predicted"] is None else f"{runs[0]['predicted']:.3f}"
        lo, hi = (min(r["measured"] for r in runs) / bound, max(r["measured"] for r in runs) / bound)
        print(f"{p:<14} {measured:>10.3f} {pred:>11} {bound:>10.3f} {measured / bound:>8.3f}  {lo:.3f}-{hi:.3f}")
    return results


if __name__ == "__main__":
    main()
