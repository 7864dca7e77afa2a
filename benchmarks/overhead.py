"""What compressflow itself costs, measured side by side in one run.

1. Per-task overhead: 200 zero-second ``wait`` tasks through ``compressflow.run`` (graph,
   energy meter, records, results store) vs 200 ``client.submit`` calls of a no-op on the
   same cluster, on a worker that has already imported what a task needs. Target: ≤ 5 ms
   per task amortised. The one-time cost a fresh worker pays in its first task (importing
   torch, CodeCarbon and the stages) is measured separately, in a fresh interpreter.
2. Training throughput: the ``train`` stage through ``compressflow.run`` (task duration from
   the ledger) vs a bare PyTorch loop doing the same work in one process (same model, data,
   batches, augmentation, SGD schedule, per-epoch validation and final test pass), both on
   one thread — once with the memory layout compressflow uses (channels-last: the overhead
   comparison, target ratio ≥ 0.95) and once with PyTorch's default layout (what a typical
   hand-written script does).

Usage: ``python benchmarks/overhead.py [--tasks 200] [--epochs 5]``
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from distributed import Client

import compressflow
from compressflow.engine.cluster import local_cluster
from compressflow.engine.execute import PRELOAD
from compressflow.data import augment_batch, load_splits
import compressflow.nn.architectures  # noqa: F401 (a script imports its models up front, not in the timed loop)
from compressflow.nn.models import build_model
from compressflow.nn.training import optimizer_with_schedule

DATA = {"dataset": "digits", "image_size": 16, "channels": 3}
TRAIN = {"model": "resnet18", "width": 0.25, "batch_size": 64, "lr": 0.1, "seed": 0}


def per_task_overhead(client: Client, n: int) -> tuple[float, float]:
    spec = {"name": "overhead", "data": DATA,
            "stages": {"noop": {"op": "wait", "sweep": {"label": list(range(n))}}}}
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        compressflow.run(spec, cluster=client, out=out, show_progress=False)
        runner = time.perf_counter() - t0
    t0 = time.perf_counter()
    client.gather([client.submit(time.sleep, 0, pure=False) for _ in range(n)])
    plain = time.perf_counter() - t0
    return runner, plain


TASK_MODULES = ("compressflow.engine.execute", "compressflow.energy", "compressflow.ops", *PRELOAD)


def warm_worker() -> None:
    """Import on a worker what its first compressflow task would: the engine, the meter and,
    through the first registry lookup, every built-in op family and entry point (a no-op
    where the worker already did, e.g. when it re-imported this script as its main module)."""
    for name in TASK_MODULES:
        importlib.import_module(name)
    importlib.import_module("compressflow.registries").load()


def cold_import_s() -> float:
    """Seconds a fresh Python process spends importing what a compressflow task needs: paid
    once per worker process, by its first task."""
    code = (f"import importlib, time; t = time.perf_counter(); "
            f"[importlib.import_module(m) for m in {TASK_MODULES!r}]; "
            f"importlib.import_module('compressflow.registries').load(); print(time.perf_counter() - t)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def bare_loop(epochs: int, channels_last: bool) -> float:
    """The same training as the ``train`` stage, written as a plain PyTorch script; with
    ``channels_last`` it also uses the memory layout compressflow's loop uses."""
    torch.set_num_threads(1)
    s = load_splits(**DATA)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    t0 = time.perf_counter()
    torch.manual_seed(TRAIN["seed"])
    model = build_model(TRAIN["model"], num_classes=s.num_classes, in_channels=s.in_channels, width=TRAIN["width"])
    model = model.to(memory_format=fmt)
    bs = TRAIN["batch_size"]
    steps = -(-len(s.train) // bs)
    opt, sched = optimizer_with_schedule(model, lr=TRAIN["lr"], batch_size=bs, epochs=epochs, steps_per_epoch=steps)
    gen = torch.Generator().manual_seed(TRAIN["seed"])
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(s.train), generator=gen)
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            x = augment_batch(s.train.x[idx], s.augment, gen).contiguous(memory_format=fmt)
            loss = F.cross_entropy(model(x), s.train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            (model(s.val.x.contiguous(memory_format=fmt)).argmax(1) == s.val.y).float().mean().item()
    with torch.no_grad():
        (model(s.test.x.contiguous(memory_format=fmt)).argmax(1) == s.test.y).float().mean().item()
    return time.perf_counter() - t0


def runner_training(client: Client, epochs: int) -> float:
    spec = {"name": "throughput", "data": DATA,
            "stages": {"teacher": {"op": "train", "params": {**TRAIN, "epochs": epochs}}}}
    with tempfile.TemporaryDirectory() as out:
        tree = compressflow.run(spec, cluster=client, out=out, show_progress=False)
    return float(tree["tasks"]["duration_s"].sum())


def meter_overhead(n: int = 200) -> tuple[float, float]:
    """Milliseconds per empty energy-meter window, and the CPU watts it reads over a 2 s busy
    loop (the meter as a worker runs it: one CodeCarbon tracker, task windows)."""
    from compressflow.energy import EnergyMeter

    meter = EnergyMeter(country="USA")
    meter.start()
    try:
        t0 = time.perf_counter()
        for i in range(n):
            with meter.measure(f"empty-{i}"):
                pass
        per_window = (time.perf_counter() - t0) / n * 1e3
        with meter.measure("busy") as reading:
            end = time.perf_counter() + 2.0
            while time.perf_counter() < end:
                pass
        watts = reading.cpu_kwh * 3.6e6 / 2.0 if reading.cpu_kwh else float("nan")
    finally:
        meter.stop()
    return per_window, watts


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args(argv)
    # one worker, one torch thread: the same resources as the bare loop
    with local_cluster(n_workers=1, torch_threads=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        client.gather(client.submit(time.sleep, 0, pure=False))  # warm the worker
        client.run(warm_worker)  # steady state: the one-time imports are measured by cold_import_s
        # a process's first run pays once for what later runs reuse: the worker's energy meter
        # (CodeCarbon's hardware probe), the dataset cache and the client's own imports
        first, _ = per_task_overhead(client, 1)
        runner, plain = per_task_overhead(client, args.tasks)
        bare = bare_loop(args.epochs, channels_last=False)
        bare_cl = bare_loop(args.epochs, channels_last=True)
        dask_train = runner_training(client, args.epochs)
    per_task_ms = (runner - plain) / args.tasks * 1e3
    print(f"per-task overhead ({args.tasks} tasks, 1 worker): runner {runner:.2f} s, plain client.submit {plain:.2f} s"
          f" -> {per_task_ms:.1f} ms/task amortised (target <= 5), {runner / plain:.2f}x plain Dask "
          f"(breakdown: benchmarks/task_cost.py)")
    print(f"first compressflow.run in a process (1 task), once: {first:.2f} s (meter start, dataset load, imports)")
    print(f"training throughput ({args.epochs} epochs resnet18 w0.25 digits16, 1 thread): compressflow task "
          f"{dask_train:.2f} s; bare loop, same memory layout (channels-last) {bare_cl:.2f} s -> ratio "
          f"{bare_cl / dask_train:.3f} (target >= 0.95); bare loop, default layout {bare:.2f} s -> ratio "
          f"{bare / dask_train:.3f}")
    cold = cold_import_s()
    print(f"fresh worker, once: importing torch, CodeCarbon and the stages takes {cold:.2f} s "
          f"({cold / args.tasks * 1e3:.1f} ms/task if spread over {args.tasks} tasks)")
    window_ms, watts = meter_overhead()
    print(f"energy meter: {window_ms:.2f} ms per empty task window; a 2 s busy loop reads {watts:.2f} W of CPU")
    return {"per_task_ms": per_task_ms, "first_run_s": first, "runner_s": runner, "plain_s": plain, "cold_import_s": cold, "train_s": dask_train,
            "bare_same_layout_s": bare_cl, "bare_default_s": bare, "meter_window_ms": window_ms, "meter_busy_w": watts}


if __name__ == "__main__":
    main()
