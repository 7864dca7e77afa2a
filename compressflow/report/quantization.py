"""The quantization part of the report (op ``quantize``): per QAT stage, the int8 model's
accuracy beside the run's float models (STKD Table 8), its size and its latency and energy per
sample against the fp32 model's, and a plot of accuracy against model size and latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from compressflow.report.markdown import markdown_table
from compressflow.report.plots import nothing_to_draw, pyplot, save_figure
from compressflow.report.sections import SECTIONS, stage_groups

__all__ = ["plot_quantization", "quantization_section", "quantization_table"]

#: the float stages an int8 model is compared with (accuracy column only)
FLOAT_OPS = ("train", "distill")


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _pct(values: np.ndarray) -> str:
    m, s = _mean_std(values)
    return f"{100 * m:.2f} ± {100 * s:.2f} %" if np.isfinite(m) else "-"


def _per_arithmetic(ds: xr.Dataset, name: str, arithmetic: str) -> np.ndarray:
    return ds[name].sel(arithmetic=arithmetic).values


def quantization_table(tree: xr.DataTree) -> str | None:
    """One row per ``quantize`` stage (int8) and per float ``train``/``distill`` stage of the
    run: test accuracy (mean ± std over the stage's tasks), and for the int8 models their
    bytes, latency and energy per sample against the fp32 model's; None without a
    ``quantize`` stage."""
    qat = stage_groups(tree, ("quantize",))
    if not qat:
        return None
    rows = [("stage", "arithmetic", "test accuracy", "bytes int8 / fp32", "latency µs/sample int8 / fp32",
             "speedup", "energy per sample int8 / fp32 (µWh)")]
    for name, ds in stage_groups(tree, FLOAT_OPS):
        if "accuracy" in ds:
            rows.append((name, "fp32", _pct(ds["accuracy"].values), "", "", "", ""))
    for name, ds in qat:
        b8, b32 = (_mean_std(_per_arithmetic(ds, "model_bytes", a))[0] for a in ("int8", "fp32"))
        l8, l32 = (_mean_std(_per_arithmetic(ds, "latency_s", a))[0] for a in ("int8", "fp32"))
        e8, e32 = (_mean_std(_per_arithmetic(ds, "inference_energy_kwh", a))[0] for a in ("int8", "fp32"))
        speed, speed_sd = _mean_std(ds["speedup"].values)
        energy = f"{1e9 * e8:.3g} / {1e9 * e32:.3g}" if np.isfinite(e8) else "not metered"
        rows.append((name, "int8", _pct(ds["accuracy"].values), f"{b8:,.0f} / {b32:,.0f} ({b8 / b32:.2f}×)",
                     f"{1e6 * l8:.0f} / {1e6 * l32:.0f}", f"{speed:.2f} ± {speed_sd:.2f}×", energy))
    return markdown_table(rows)


def plot_quantization(tree: xr.DataTree, path: Path) -> Path:
    """Test accuracy against model bytes (left) and against latency per sample (right): each
    ``quantize`` stage's int8 model and the fp32 model it was timed beside;
    :func:`~compressflow.report.plots.nothing_to_draw` when the run has no ``quantize`` stage."""
    qat = stage_groups(tree, ("quantize",))
    if not qat:
        return nothing_to_draw(path, "int8 vs fp32", "the run has no quantize stage")
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for i, (name, ds) in enumerate(qat):
        acc, sd = _mean_std(ds["accuracy"].values)
        color = f"C{i % 10}"
        for ax, var, scale in ((left, "model_bytes", 1 / 1024), (right, "latency_s", 1e6)):
            int8, fp32 = (scale * _mean_std(_per_arithmetic(ds, var, a))[0] for a in ("int8", "fp32"))
            ax.errorbar(int8, 100 * acc, yerr=100 * sd, marker="o", capsize=3, color=color, ls="none",
                        label=f"{name} (int8)")
            ax.axvline(fp32, color=color, ls=":", lw=1, label=f"{name}: its fp32 model")
    left.set_xlabel("saved model size (KiB)")
    right.set_xlabel("inference latency (µs/sample, CPU)")
    for ax in (left, right):
        ax.set_ylabel("int8 test accuracy (%)")
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle("int8 (points) vs fp32 (dotted lines): size and latency")
    return save_figure(fig, path)


@SECTIONS.register(ops=("quantize",), order=15)
def quantization_section(tree: xr.DataTree, folder: Path) -> str | None:
    """The int8 models of the run's ``quantize`` stages beside its float models (STKD Table 8)."""
    table = quantization_table(tree)
    if table is None:
        return None
    png = plot_quantization(tree, folder / "quantization.png")
    note = ("Latency and energy are measured on the CPU, the int8 and the fused fp32 model interleaved on the same "
            "test images in the task's threads; energy per sample is CodeCarbon's reading over those passes "
            "(a CPU-TDP model where no RAPL counter is readable).")
    return f"## Quantization-aware training (int8) vs float\n\n{table}\n\n{note}\n\n![int8 vs fp32]({png.name})"
