"""What resumable checkpoints cost and what they save, measured side by side in one run, for
the quickstart's models (tasks/quickstart.yaml: digits at 16x16, ResNet18 and MobileNetV2 at
width 0.25), through :meth:`compressflow.ops.OpContext.fit` as a task runs it.

1. Overhead: epoch time with a state written every epoch (``checkpoint_every: 1``: model,
   optimizer, schedule, RNGs and history serialised, written to a temporary file, fsynced and
   renamed into place) vs none (``checkpoint_every: 0``), interleaved run by run; and the save
   itself, timed, as a fraction of an epoch.
2. A walltime expiry at 70 % of training: the attempt is killed mid-epoch when 70 % of an
   uninterrupted run's time has passed; the next attempt resumes from the last state (with
   checkpoints) or trains from epoch 1 (without). Time lost = both attempts' time minus one
   uninterrupted run (measured), and by work: the killed attempt's time minus the epochs it
   saved at the uninterrupted run's epoch time (robust to other load on the machine).

Usage: ``python benchmarks/checkpoint_overhead.py [--epochs 10] [--repeats 2]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

import compressflow.ops.context as context
from compressflow.nn.models import build_model
from compressflow.ops import OpContext, Schedule
from compressflow.ops.context import _read_state

DATA = {"dataset": "digits", "image_size": 16, "channels": 3}
MODELS = ("resnet18", "mobilenet_v2")


class Expired(BaseException):
    """The walltime limit: nothing in the task catches it (as SIGKILL, no state written)."""


def _net(name: str, ctx: OpContext) -> torch.nn.Module:
    splits = ctx.splits()
    torch.manual_seed(0)
    return build_model(name, num_classes=splits.num_classes, in_channels=splits.in_channels, width=0.25)


def _fit(name: str, out: Path, epochs: int, every: int, deadline: float | None = None,
         key: str = "train-bench") -> tuple[float, float, int]:
    """One attempt: (wall seconds, seconds spent saving states, epochs restored)."""
    ctx = OpContext(key, "teacher", DATA, out, checkpoint_every=every)
    saving = [0.0]
    real = {"save": torch.save, "write": context.atomic_write_bytes}

    def timed(fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                saving[0] += time.perf_counter() - t0
        return run

    if every:  # time the save (serialising, writing, fsync, rename), not just the whole fit
        torch.save, context.atomic_write_bytes = timed(real["save"]), timed(real["write"])
    net = _net(name, ctx)

    def loss(logits, x, y):
        if deadline is not None and time.perf_counter() > deadline:
            raise Expired
        return torch.nn.functional.cross_entropy(logits, y)

    t0 = time.perf_counter()
    try:
        ctx.fit(net, Schedule(epochs=epochs, batch_size=64, lr=0.1), seed=0, loss_fn=loss)
    except Expired:
        pass
    finally:
        torch.save, context.atomic_write_bytes = real["save"], real["write"]
    return time.perf_counter() - t0, saving[0], ctx.resumed_from_epoch


def overhead(name: str, epochs: int, repeats: int) -> dict[str, float]:
    plain, ckpt, save = [], [], []
    for _ in range(repeats):  # interleaved, so a busy spell of the machine hits both alike
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            plain.append(_fit(name, Path(a), epochs, every=0)[0] / epochs)
            wall, saving, _ = _fit(name, Path(b), epochs, every=1)
            ckpt.append(wall / epochs)
            save.append(saving / epochs)
            size = next(Path(b, "artifacts").glob("*.resume0.pt")).stat().st_size
    p, c = statistics.median(plain), statistics.median(ckpt)
    return {"epoch_s": p, "epoch_ckpt_s": c, "ratio": c / p, "write_s": statistics.median(save),
            "state_mb": size / 1e6}


def expiry(name: str, epochs: int, at: float = 0.7) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        full = _fit(name, Path(tmp, "full"), epochs, every=0)[0]
        out = {}
        for every, label in ((1, "resume"), (0, "restart")):
            run = Path(tmp, label)
            first, _, _ = _fit(name, run, epochs, every=every, deadline=time.perf_counter() + at * full)
            saved = _read_state(run / "artifacts" / "train-bench.resume0.pt") if every else None
            second, _, restored = _fit(name, run, epochs, every=every)
            out[label] = first + second - full
            out[f"{label}_restored"] = restored
            # the same by work, robust to a busy machine: attempt 1's time minus the epochs it saved
            out[f"{label}_by_epochs"] = first - restored * full / epochs
            if saved is not None:
                out["saved_epoch"] = saved["epoch"]
        out["full_s"] = full
        return out


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one task per core, as the local cluster runs them
    results = {}
    print(f"digits 16x16, width 0.25, batch 64, {args.epochs} epochs, 1 thread, median of {args.repeats}")
    for name in MODELS:
        with tempfile.TemporaryDirectory() as warm:  # data loaded, kernels chosen: not part of any figure
            _fit(name, Path(warm), 1, every=1)
        o = overhead(name, min(args.epochs, 4), args.repeats)
        print(f"{name:13s} checkpoint every epoch: epoch {o['epoch_s']:.3f} s -> {o['epoch_ckpt_s']:.3f} s "
              f"(ratio {o['ratio']:.3f}); writing one state ({o['state_mb']:.2f} MB) "
              f"{o['write_s'] * 1e3:.1f} ms = {o['write_s'] / o['epoch_s']:.2%} of an epoch")
        e = expiry(name, args.epochs)
        print(f"{name:13s} walltime expiry at 70% of {e['full_s']:.1f} s: time lost with checkpoints "
              f"{e['resume']:.1f} s measured, {e['resume_by_epochs']:.1f} s by epochs (resumed after epoch "
              f"{e['resume_restored']}); restarting from 0 {e['restart']:.1f} s measured, "
              f"{e['restart_by_epochs']:.1f} s by epochs; ratio (by epochs) "
              f"{e['restart_by_epochs'] / max(e['resume_by_epochs'], 1e-3):.1f}x")
        results[name] = {**o, **e}
    return results


if __name__ == "__main__":
    main()
