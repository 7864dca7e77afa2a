"""Every benchmark in one invocation, side by side, as one table of measured ratios; the
table (with the date and the machine) is also written to ``benchmarks/RESULTS.md``.

Runs ``overhead.py`` (per-task overhead vs plain Dask, training throughput vs bare PyTorch,
energy-meter cost), ``tls_overhead.py`` (per-task cost of the embedded cluster's default TLS
vs plain TCP), ``blockwise_scaling.py`` (speedup, efficiency and greenup per policy;
Zarr activation read vs recomputing the prefix and vs raw NumPy; memory; and the
``scheduling_sim.py`` makespans) and ``resilience.py`` (runs completed with a worker killed).

Usage: ``python benchmarks/run_all.py [--quick]`` (``--quick``: fewer tasks, epochs and runs).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def machine() -> str:
    import psutil
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} logical CPUs ({cpu}), {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def rows_from(over: dict, block: dict, res: dict, tls: dict) -> list[tuple[str, str, str]]:
    from compressflow.engine.scheduling import lower_bound

    rows = [
        ("per-task overhead vs plain `client.submit`", f"{over['per_task_ms']:.1f} ms/task "
         f"({over['runner_s']:.2f} s vs {over['plain_s']:.2f} s)", "≤ 5 ms"),
        ("a process's first `compressflow.run` (1 task), once: meter start, dataset load, imports",
         f"{over['first_run_s']:.2f} s", ""),
        ("fresh worker, once per process: importing torch, CodeCarbon and the stages", f"{over['cold_import_s']:.2f} s", ""),
        ("training throughput vs bare PyTorch (same memory layout)", f"{over['bare_same_layout_s'] / over['train_s']:.3f}", "≥ 0.95"),
        ("training throughput vs bare PyTorch (default layout)", f"{over['bare_default_s'] / over['train_s']:.3f}", ""),
        ("energy meter: empty task window", f"{over['meter_window_ms']:.2f} ms", ""),
        ("per task through the runner, TLS (default) vs plain TCP", f"{tls['tls_runner_ms']:.1f} vs "
         f"{tls['tcp_runner_ms']:.1f} ms ({tls['runner_ratio']:.2f}×)", ""),
        ("per task through plain `client.submit`, TLS vs plain TCP", f"{tls['tls_plain_ms']:.2f} vs "
         f"{tls['tcp_plain_ms']:.2f} ms ({tls['plain_ratio']:.2f}×)", ""),
    ]
    t1 = block["t1"]
    for label, t2, b2, e2, _ in block["policies"]:
        rows.append((f"blockwise ResNet18, 2 workers, {label}: speedup / efficiency / greenup",
                     f"{t1 / t2:.2f} / {t1 / t2 / 2:.2f} / {block['e1'] / e2:.2f} (slowdown {b2 / block['b1']:.3f})",
                     "≥ 1.8 / ≥ 0.9" if label.startswith("work_stealing") else ""))
    reads = block["reads"]
    rows.append(("Zarr activation read vs recomputing the teacher prefix (deepest 3 layers)",
                 f"{statistics.median(r[2] / r[1] for r in reads):.1f}× faster", "> 1"))
    rows.append(("Zarr activation read vs raw NumPy `.npy` read", f"{statistics.median(r[1] / r[3] for r in reads):.2f}× the time", ""))
    rows.append(("activation cache on disk", f"{block['cache_mib']:.0f} MiB", ""))
    (_, lg), (_, kg) = block["memory"]["layer"], block["memory"]["kd"]
    rows.append(("peak memory growth: layer task vs whole-teacher KD task", f"{lg:.0f} MB vs {kg:.0f} MB ({lg / kg:.2f})", "< 1"))
    if block["sim"]:
        sys.path.insert(0, str(HERE))
        from scheduling_sim import VGG16_SECONDS

        bound = lower_bound({str(i): s for i, s in enumerate(VGG16_SECONDS)}, 4)
        for policy, runs in block["sim"].items():
            rows.append((f"scheduling simulation (VGG16 times, 4 workers), {policy}: makespan / lower bound",
                         f"{statistics.median(r['measured'] for r in runs) / bound:.3f}",
                         "≤ 1.10" if policy != "round_robin" else "≥ bin packing"))
    rows.append(("worker killed mid-run: complete, correct ledgers", f"{res['complete']}/{res['runs']}", f"{res['runs']}/{res['runs']}"))
    rows.append(("worker killed mid-run: extra wall time", f"+{res['killed_s'] - res['calm_s']:.2f} s "
                 f"({res['killed_s'] / res['calm_s']:.2f}×)", ""))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    import blockwise_scaling
    import overhead
    import resilience
    import tls_overhead

    t0 = time.perf_counter()
    over = overhead.main(["--tasks", "50", "--epochs", "2"] if args.quick else [])
    tls = tls_overhead.main(["--tasks", "50", "--repeats", "1"] if args.quick else [])
    block = blockwise_scaling.main(["--epochs", "6"] if args.quick else [])
    res = resilience.main(["--runs", "3"] if args.quick else [])
    elapsed = time.perf_counter() - t0
    rows = rows_from(over, block, res, tls)
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':{width}s}  {'result':40s}  target")
    for name, value, target in rows:
        print(f"{name:{width}s}  {value:40s}  {target}")
    lines = [
        "# Benchmark results", "",
        f"Measured {datetime.date.today().isoformat()} by `python benchmarks/run_all.py{' --quick' if args.quick else ''}` "
        f"in {elapsed / 60:.1f} min on {machine()}. Every ratio is measured side by side in the same run.", "",
        "| measure | result | target |", "|---|---|---|",
        *[f"| {n} | {v} | {t} |" for n, v, t in rows], "",
    ]
    Path(args.results).write_text("\n".join(lines))
    print(f"\nwritten to {args.results} ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
