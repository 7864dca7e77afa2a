"""What int8 buys at inference beyond batch 1 on 16×16 digits: the latency per sample of a
QAT-converted int8 MobileNetV2 beside the same architecture in fp32 (Conv+BN fused, as a float
model is deployed), measured side by side in one run over batch sizes and image sizes.

The models are the ``quantize`` op's own (``prepare_qat`` → ``convert_int8`` and
``fuse_float`` from :mod:`compressflow.nn.quantization`), timed by its ``time_models``
(interleaved rounds, the median per model). Latency does not depend on the weights' values, so
the QAT model is calibrated on random inputs (its observers see a few training-mode passes)
instead of trained: the int8 graph and kernels are the same as a trained one's.

Reported per (image size, batch, threads): ms per sample for int8 and fp32 and the speedup
(fp32 / int8). Usage: ``python benchmarks/qat_latency.py [--width 0.25] [--threads 1]
[--sizes 16 32 64] [--batches 1 16 128] [--samples 256] [--rounds 5]``
"""

from __future__ import annotations

import argparse

import torch

from compressflow.nn.models import build_model
from compressflow.nn.quantization import convert_int8, fuse_float, prepare_qat, saved_bytes, time_models


def models_at(size: int, width: float, channels: int = 3, classes: int = 10) -> dict[str, torch.nn.Module]:
    """The int8 and the fused fp32 MobileNetV2 for ``size``×``size`` images."""
    torch.manual_seed(0)
    net = build_model("mobilenet_v2", num_classes=classes, in_channels=channels, width=width)
    fp32 = fuse_float(net)
    prepared = prepare_qat(net, (channels, size, size))
    with torch.no_grad():
        for _ in range(8):  # observers record activation ranges in training mode
            prepared(torch.randn(32, channels, size, size))
    return {"int8": convert_int8(prepared), "fp32": fp32}


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    rows = []
    print("| image | batch | threads | int8 ms/sample | fp32 ms/sample | speedup |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes:
        models = models_at(size, args.width)
        inputs = torch.randn(args.samples, 3, size, size)
        for threads in args.threads:
            torch.set_num_threads(threads)
            for batch in args.batches:
                t = time_models(models, inputs, batch_size=batch, rounds=args.rounds)
                row = {"size": size, "batch": batch, "threads": threads, "int8_ms": t.latency_s["int8"] * 1e3,
                       "fp32_ms": t.latency_s["fp32"] * 1e3, "speedup": t.latency_s["fp32"] / t.latency_s["int8"]}
                rows.append(row)
                print(f"| {size}×{size} | {batch} | {threads} | {row['int8_ms']:.3f} | {row['fp32_ms']:.3f} | "
                      f"{row['speedup']:.2f}× |", flush=True)
    sizes = models_at(args.sizes[0], args.width)
    print(f"\nsaved bytes: int8 {saved_bytes(sizes['int8']):,}, fp32 {saved_bytes(sizes['fp32']):,} "
          f"(width {args.width}, 3 input channels, 10 classes)")
    return rows


if __name__ == "__main__":
    main()
