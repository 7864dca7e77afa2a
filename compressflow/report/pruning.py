"""The pruning part of the report (ops ``prune`` and ``svcca``): accuracy vs sparsity per
method, and SVCCA similarity to the original as a layer × sparsity heatmap per method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from compressflow.report.markdown import markdown_table
from compressflow.report.plots import pyplot, save_figure
from compressflow.report.sections import SECTIONS, stage_groups

__all__ = ["plot_accuracy_vs_sparsity", "plot_similarity_heatmaps", "pruning_section"]


def _over_seeds(da: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    if "seed" in da.dims:
        return da.mean("seed"), da.std("seed", ddof=1) if da.sizes["seed"] > 1 else xr.zeros_like(da.mean("seed"))
    return da, xr.zeros_like(da)


def plot_accuracy_vs_sparsity(pruned: xr.Dataset, path: Path, title: str) -> Path:
    """Test accuracy (mean ± std over seeds) against sparsity, one line per method."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    methods = pruned["method"].values if "method" in pruned.dims else [None]
    for method in methods:
        acc = pruned["accuracy"].sel({"method": method}) if method is not None else pruned["accuracy"]
        mean, std = _over_seeds(acc)
        x = 100 * mean["sparsity"].values
        ax.errorbar(x, 100 * mean.values, yerr=100 * std.values, marker="o", capsize=3, label=str(method or "pruned"))
    if "original_accuracy" in pruned:
        ax.axhline(100 * float(pruned["original_accuracy"].max()), color="k", ls="--", lw=1, label="original")
    ax.set_xlabel("sparsity of each pruned layer (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)


def plot_similarity_heatmaps(sim: xr.Dataset, path: Path, title: str) -> Path:
    """Mean SVCCA similarity over seeds, layer × sparsity, one panel per method."""
    plt = pyplot()
    methods = list(sim["method"].values) if "method" in sim.dims else [None]
    fig, axes = plt.subplots(1, len(methods), figsize=(2.6 * len(methods) + 2.6, 5.2), dpi=120, squeeze=False,
                             sharey=True)
    low = max(0.0, np.floor(10 * float(sim["svcca"].min())) / 10)  # one shared scale, as much contrast as the data has
    for i, (ax, method) in enumerate(zip(axes[0], methods)):
        s = sim["svcca"].sel({"method": method}) if method is not None else sim["svcca"]
        mean, _ = _over_seeds(s)
        grid = mean.transpose("layer", "sparsity").values
        im = ax.imshow(grid, vmin=low, vmax=1, cmap="viridis", aspect="auto")
        ax.set_xticks(range(grid.shape[1]), [f"{100 * v:g}" for v in mean["sparsity"].values])
        if i == 0:
            ax.set_yticks(range(grid.shape[0]), [str(v) for v in mean["layer"].values], fontsize=7)
        ax.set_xlabel("sparsity (%)")
        ax.set_title(str(method or ""))
    fig.colorbar(im, ax=axes[0].tolist(), label="SVCCA similarity to the original")
    fig.suptitle(title)
    return save_figure(fig, path, tight=False)


def _accuracy_part(name: str, ds: xr.Dataset, folder: Path) -> str | None:
    if "sparsity" not in ds.dims:
        return None
    png = plot_accuracy_vs_sparsity(ds, folder / f"{name}_accuracy_vs_sparsity.png", f"{name}: accuracy vs sparsity")
    return f"## {name}: accuracy vs sparsity\n\n{_accuracy_table(ds)}\n\n![accuracy vs sparsity]({png.name})"


def _similarity_part(name: str, ds: xr.Dataset, folder: Path) -> str | None:
    if "sparsity" not in ds.dims or "layer" not in ds.dims:
        return None
    png = plot_similarity_heatmaps(ds, folder / f"{name}_svcca_heatmap.png", f"{name}: SVCCA to the original")
    return f"## {name}: representation similarity\n\n{_similarity_table(ds)}\n\n![SVCCA heatmap]({png.name})"


#: the part each op's stage gets (an ``svcca`` stage only when swept over ``sparsity``)
PARTS = {"prune": _accuracy_part, "svcca": _similarity_part}


@SECTIONS.register(ops=tuple(PARTS), order=20)
def pruning_section(tree: xr.DataTree, folder: Path) -> str | None:
    """Accuracy vs sparsity (table + plot) for every ``prune`` stage swept over ``sparsity``,
    and SVCCA to the original (table + heatmap) for every ``svcca`` stage swept over
    ``sparsity`` and ``layer``, in stage-name order; their PNGs are written to ``folder``."""
    parts = [PARTS[ds.attrs["op"]](name, ds, folder) for name, ds in stage_groups(tree, PARTS)]
    return "\n\n".join(p for p in parts if p) or None


def _rows_by_method(da: xr.DataArray, fmt) -> str:
    mean, std = _over_seeds(da)
    sparsities = mean["sparsity"].values
    rows = [("method", *[f"{100 * s:g} %" for s in sparsities])]
    for method in (mean["method"].values if "method" in mean.dims else [None]):
        m = mean.sel({"method": method}) if method is not None else mean
        sd = std.sel({"method": method}) if method is not None else std
        rows.append((str(method or "-"), *[fmt(float(m.sel(sparsity=s)), float(sd.sel(sparsity=s))) for s in sparsities]))
    return markdown_table(rows)


def _accuracy_table(ds: xr.Dataset) -> str:
    return _rows_by_method(ds["accuracy"], lambda m, s: f"{100 * m:.2f} ± {100 * s:.2f}")


def _similarity_table(ds: xr.Dataset) -> str:
    mean_over_layers = ds["svcca"].mean("layer")
    return _rows_by_method(mean_over_layers, lambda m, s: f"{m:.3f} ± {s:.3f}") + (
        "\n\nMean SVCCA similarity over layers (± std over seeds)." if np.size(mean_over_layers) else "")
