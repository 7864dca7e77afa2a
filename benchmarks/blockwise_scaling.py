"""Blockwise distillation scaling, measured side by side in one invocation.

The ResNet18 teacher (width 0.25, 16x16 digits) and its activation cache are computed once;
then the 17 ``replace_layer`` tasks run on 1 worker and on 2 workers (one thread each, one
torch thread each) under each scheduling policy. Printed per policy: wall time of the block
stage (first task start to last task end, from the ledger), speedup T1/Tn, efficiency
speedup/n, and greenup E1/En (summed task energy). Bin packing uses the task durations of the
1-worker run as its "previous run". Then the sleep-task scheduling simulation
(``scheduling_sim.py``) runs on 4 workers.

Usage: ``python benchmarks/blockwise_scaling.py [--epochs 10] [--skip-sim]``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

LAYERS = ["conv1"] + [f"layer{s}.{b}.conv{c}" for s in range(1, 5) for b in range(2) for c in (1, 2)]
DATA = {"dataset": "digits", "image_size": 16, "channels": 3}


def spec(epochs: int, policy: str = "work_stealing", durations_from: str | None = None) -> dict:
    scheduling = {"policy": policy, "key_by": "layer"}
    if durations_from:
        scheduling["durations_from"] = durations_from
    return {
        "name": "blockwise-scaling", "data": DATA,
        "stages": {
            "teacher": {"op": "train", "params": {"model": "resnet18", "width": 0.25, "epochs": 15}},
            "cache": {"op": "activations", "needs": {"model": "teacher"}},
            "blocks": {"op": "replace_layer", "needs": {"teacher": "teacher", "activations": "cache"},
                       "params": {"epochs": epochs}, "sweep": {"layer": LAYERS}, "scheduling": scheduling},
        },
    }


def measure(run, n_workers: int, spec_: dict, base: Path, out: Path) -> tuple[float, float, dict]:
    """Run the block stage on ``n_workers``, reusing the teacher and cache records of ``base``."""
    from distributed import Client

    from compressflow.cluster import local_cluster

    shutil.copytree(base / "records", out / "records")
    for rec in (out / "records").glob("replace_layer-*.json"):
        rec.unlink()  # the blocks must run again
    with local_cluster(n_workers=n_workers, torch_threads=1, dashboard_address=":0") as cluster, Client(cluster) as c:
        tree = run(spec_, cluster=c, out=out, show_progress=False)
    ledger = tree["tasks"].to_dataset()
    blocks = ledger.isel(task=(ledger.stage.values == "blocks"))
    wall = float((blocks.end.max() - blocks.start.min()).values / np.timedelta64(1, "s"))
    return wall, float(blocks.energy_kwh.sum()), {str(w) for w in blocks.worker.values}


def main() -> None:
    import compressflow

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--skip-sim", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        compressflow.run({**spec(args.epochs), "stages": {k: v for k, v in spec(args.epochs)["stages"].items()
                                                         if k != "blocks"}}, out=tmp / "base", show_progress=False)
        t1, e1, _ = measure(compressflow.run, 1, spec(args.epochs), tmp / "base", tmp / "one")
        rows = []
        for policy in ("work_stealing", "round_robin", "bin_packing"):
            s = spec(args.epochs, policy, durations_from=str(tmp / "one") if policy == "bin_packing" else None)
            t2, e2, used = measure(compressflow.run, 2, s, tmp / "base", tmp / policy)
            rows.append((policy, t2, e2, len(used)))
    print(f"ResNet18 blockwise, {len(LAYERS)} layers x {args.epochs} epochs; 1 worker: {t1:.1f} s, {e1:.3g} kWh")
    print(f"{'policy':15s} {'T2 s':>7s} {'speedup':>8s} {'efficiency':>10s} {'greenup':>8s} workers")
    for policy, t2, e2, used in rows:
        print(f"{policy:15s} {t2:7.1f} {t1 / t2:8.2f} {t1 / t2 / 2:10.2f} {e1 / e2:8.2f} {used}")
    if not args.skip_sim:
        sys.path.insert(0, str(Path(__file__).parent))
        import scheduling_sim

        scheduling_sim.main([])


if __name__ == "__main__":
    main()
