"""Blockwise distillation scaling, measured side by side in one invocation.

The ResNet18 teacher (width 0.25, 16x16 digits) and its activation cache are computed once;
then the 17 ``replace_layer`` tasks run on 1 worker and on 2 workers (one thread each, one
torch thread each) under each scheduling policy. Printed per policy: wall time of the block
stage (first task start to last task end, from the ledger), speedup T1/Tn, efficiency
speedup/n, greenup E1/En (summed task energy), and where the lost efficiency went:
``slowdown`` = summed task time on n workers / on 1 (the cores slowing each other down) and
``idle`` = seconds the workers sat idle inside the stage (uneven finish). Bin packing and
"work_stealing+lpt" (longest first) use the task durations of the 1-worker run as their
"previous run". Then the sleep-task scheduling simulation (``scheduling_sim.py``) runs on 4
workers.

Also printed: the activation cache's size on disk; reading the deepest layers' inputs and
targets from the cache vs recomputing them through the teacher prefix; and the peak memory
(max RSS of a fresh process) of one layer task vs a whole-teacher distillation task on the
same data.

Usage: ``python benchmarks/blockwise_scaling.py [--epochs 30] [--skip-sim]``
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


def measure(run, n_workers: int, spec_: dict, base: Path, out: Path) -> tuple[float, float, float, set]:
    """Run the block stage on ``n_workers``, reusing the teacher and cache records of ``base``."""
    from distributed import Client

    from compressflow.engine.cluster import local_cluster

    shutil.copytree(base / "records", out / "records")
    shutil.copytree(base / "artifacts", out / "artifacts")  # records name their artifacts relative to the run
    for rec in (out / "records").glob("replace_layer-*.json"):
        rec.unlink()  # the blocks must run again
    with local_cluster(n_workers=n_workers, torch_threads=1, dashboard_address=":0") as cluster, Client(cluster) as c:
        tree = run(spec_, cluster=c, out=out, show_progress=False)
    ledger = tree["tasks"].to_dataset()
    blocks = ledger.isel(task=(ledger.stage.values == "blocks"))
    wall = float((blocks.end.max() - blocks.start.min()).values / np.timedelta64(1, "s"))
    busy = float(blocks.duration_s.sum())
    return wall, busy, float(blocks.energy_kwh.sum()), {str(w) for w in blocks.worker.values}


def cache_vs_recompute(base: Path, layers: list[str]) -> list[tuple[str, float, float, float]]:
    """Seconds to get each layer's train inputs/targets from the Zarr cache, by recomputing
    the teacher prefix, and from raw NumPy ``.npy`` files of the same arrays (the floor)."""
    import time

    from compressflow.data import load_splits
    from compressflow.rundir import RunDir
    from compressflow.ops.blockwise import _layer_data
    from compressflow.ops import load_checkpoint

    run = RunDir(base)
    recs = [run.finished(k) for k in run.record_keys()]
    teacher = next(r for r in recs if r.op == "train").record.artifact
    cache = next(r for r in recs if r.op == "activations").record.artifact
    net, splits = load_checkpoint(teacher).eval(), load_splits(**DATA)
    rows = []
    for layer in layers:
        t0 = time.perf_counter()
        x_in, y_out = _layer_data(net, layer, splits, cache)
        t1 = time.perf_counter()
        _layer_data(net, layer, splits, None)
        t2 = time.perf_counter()
        npy = base / f"{layer}.npz"
        np.save(npy.with_suffix(".in.npy"), x_in.numpy())
        np.save(npy.with_suffix(".out.npy"), y_out.numpy())
        t3 = time.perf_counter()
        np.load(npy.with_suffix(".in.npy")), np.load(npy.with_suffix(".out.npy"))
        rows.append((layer, t1 - t0, t2 - t1, time.perf_counter() - t3))
    return rows


def _peak_rss_mb(job: str, base: str) -> tuple[float, float]:
    """Run one task in this fresh process; return (peak resident memory during the task, its
    growth over the resident memory just before the task), in MB, sampled every 5 ms."""
    import threading

    import psutil
    import torch

    from compressflow.rundir import RunDir
    from compressflow.ops.context import OpContext
    from compressflow.ops.blockwise import replace_layer
    from compressflow.ops.distill import distill

    torch.set_num_threads(1)
    run = RunDir(base)
    recs = [run.finished(k) for k in run.record_keys()]
    teacher = next(r for r in recs if r.op == "train").record.artifact
    cache = next(r for r in recs if r.op == "activations").record.artifact
    ctx = OpContext(job, job, DATA, Path(base) / job)
    ctx.splits()
    proc, peak, done = psutil.Process(), [0], threading.Event()
    before = proc.memory_info().rss

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    if job == "layer":
        replace_layer(ctx, teacher=teacher, activations=cache, layer=LAYERS[-1], epochs=2)
    else:
        distill(ctx, teacher=teacher, model="resnet18", width=0.25)
    done.set()
    sampler.join()
    return peak[0] / 2**20, (peak[0] - before) / 2**20


def peak_memory(base: Path) -> dict[str, tuple[float, float]]:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    out = {}
    for job in ("layer", "kd"):
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            out[job] = pool.submit(_peak_rss_mb, job, str(base)).result()
    return out


def main(argv: list[str] | None = None) -> dict:
    import compressflow

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--skip-sim", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        compressflow.run({**spec(args.epochs), "stages": {k: v for k, v in spec(args.epochs)["stages"].items()
                                                         if k != "blocks"}}, out=tmp / "base", show_progress=False)
        t1, b1, e1, _ = measure(compressflow.run, 1, spec(args.epochs), tmp / "base", tmp / "one")
        rows = []
        for label, policy, known in (("work_stealing", "work_stealing", False), ("work_stealing+lpt", "work_stealing", True),
                                     ("round_robin", "round_robin", False), ("bin_packing", "bin_packing", True)):
            s = spec(args.epochs, policy, durations_from=str(tmp / "one") if known else None)
            t2, b2, e2, used = measure(compressflow.run, 2, s, tmp / "base", tmp / label)
            rows.append((label, t2, b2, e2, len(used)))
        reads = cache_vs_recompute(tmp / "base", LAYERS[-3:])
        size = sum(f.stat().st_size for f in (tmp / "base" / "artifacts").rglob("*") if f.is_file() and ".zarr" in str(f))
        memory = peak_memory(tmp / "base")
    print(f"ResNet18 blockwise, {len(LAYERS)} layers x {args.epochs} epochs; 1 worker: {t1:.1f} s, {e1:.3g} kWh")
    print(f"{'policy':18s} {'T2 s':>6s} {'speedup':>8s} {'efficiency':>10s} {'greenup':>8s} {'slowdown':>9s} "
          f"{'idle s':>7s} workers")
    for label, t2, b2, e2, used in rows:
        print(f"{label:18s} {t2:6.1f} {t1 / t2:8.2f} {t1 / t2 / 2:10.2f} {e1 / e2:8.2f} {b2 / b1:9.3f} "
              f"{2 * t2 - b2:7.1f} {used}")
    print(f"activation cache on disk: {size / 2**20:.1f} MiB ({len(LAYERS)} layers, train + val)")
    for layer, cached, recomputed, raw in reads:
        print(f"  {layer:16s} read from cache {cached * 1e3:7.1f} ms, recompute prefix {recomputed * 1e3:7.1f} ms "
              f"-> recompute/cache {recomputed / cached:.2f}; raw .npy read {raw * 1e3:6.1f} ms -> cache/raw "
              f"{cached / raw:.2f}")
    (lp, lg), (kp, kg) = memory["layer"], memory["kd"]
    print(f"peak resident memory during the task (fresh process, torch imported, data loaded): one layer task "
          f"{lp:.0f} MB (+{lg:.0f} MB over its start), whole-teacher KD task {kp:.0f} MB (+{kg:.0f} MB) -> growth "
          f"ratio {lg / max(kg, 1e-9):.2f}")
    sim = None
    if not args.skip_sim:
        sys.path.insert(0, str(Path(__file__).parent))
        import scheduling_sim

        sim = scheduling_sim.main([])
    return {"t1": t1, "e1": e1, "b1": b1, "policies": rows, "cache_mib": size / 2**20, "reads": reads,
            "memory": memory, "sim": sim}


if __name__ == "__main__":
    main()
