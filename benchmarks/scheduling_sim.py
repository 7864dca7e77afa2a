"""Scheduling policies for blockwise distillation, simulated with sleep tasks on a real cluster.

One ``time.sleep(d)`` task per VGG16 conv layer (13 tasks) on a ``LocalCluster`` of 4
single-threaded worker processes; sleeps need no CPU, so 4 workers are fine on a small
machine. The per-layer times are *shaped after* the uneven VGG16 times in the blockwise
distillation paper's figure (first layers ~3.5x the last) — not measured here — and scaled
by ``--scale``.

Per policy (``compressflow.scheduling.assign``): round robin and bin packing pin each task to
its assigned worker (``workers=[w], allow_other_workers=False``); work stealing submits
unrestricted and lets Dask's scheduler place and steal. Wall time runs from the first submit
until every task is done, so it includes Dask's dispatch cost (tens of ms).

Targets: work stealing and bin packing within 10 % of the lower bound; bin packing ≤ round robin.

Usage: ``python benchmarks/scheduling_sim.py [--scale 1.0]``
"""

from __future__ import annotations

import argparse
import time

from distributed import Client, LocalCluster, wait

from compressflow.scheduling import POLICIES, assign, lower_bound, makespan

VGG16_SECONDS = [1.40, 1.40, 1.10, 1.10, 0.80, 0.80, 0.80, 0.55, 0.55, 0.55, 0.40, 0.40, 0.40]


def run_policy(client: Client, policy: str, durations: dict[str, float], workers: list[str]) -> dict:
    """Submit one sleep task per layer under ``policy``; return measured and predicted makespans."""
    assignment = assign(policy, durations, workers)
    t0 = time.perf_counter()
    futures = []
    for key, d in durations.items():
        # Keys carry the policy so a previous policy's (released) futures never collide.
        where = {} if assignment is None else {"workers": [assignment[key]], "allow_other_workers": False}
        futures.append(client.submit(time.sleep, d, key=f"{policy}/{key}", pure=False, **where))
    wait(futures)
    measured = time.perf_counter() - t0
    who = client.who_has(futures)
    placed = {f.key: who[f.key][0] for f in futures}
    if assignment is not None:  # the restriction held: every task ran where it was assigned
        assert all(placed[f"{policy}/{k}"] == w for k, w in assignment.items()), placed
    client.cancel(futures)
    return {
        "measured": measured,
        "predicted": None if assignment is None else makespan(assignment, durations),
        "tasks_per_worker": sorted(list(placed.values()).count(w) for w in workers),
    }


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every task time (default 1.0)")
    args = parser.parse_args(argv)
    durations = {f"layer-{i}": s * args.scale for i, s in enumerate(VGG16_SECONDS)}

    with LocalCluster(n_workers=4, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1") as cluster, Client(cluster) as client:
        client.wait_for_workers(4)
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
        # Warm up: ship time.sleep to every worker once so the first policy pays no extra.
        wait([client.submit(time.sleep, 0, pure=False, workers=[w]) for w in workers])
        bound = lower_bound(durations, len(workers))
        results = {p: run_policy(client, p, durations, workers) for p in POLICIES}

    print(f"{len(durations)} sleep tasks, total {sum(durations.values()):.2f} s, {len(workers)} workers, "
          f"lower bound {bound:.3f} s")
    print(f"{'policy':<14} {'measured s':>10} {'predicted s':>11} {'lower bd s':>10} {'meas/LB':>8}  tasks/worker")
    for p, r in results.items():
        pred = "n/a" if r["predicted"] is None else f"{r['predicted']:.3f}"
        print(f"{p:<14} {r['measured']:>10.3f} {pred:>11} {bound:>10.3f} {r['measured'] / bound:>8.3f}  "
              f"{r['tasks_per_worker']}")
    return results


if __name__ == "__main__":
    main()
