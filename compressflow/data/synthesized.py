"""The Zarr image-set store: synthetic training images and their labels, written by the
``synthesize`` op and read by ``distill`` (``needs: {data: <synthesize stage>}``).

Layout of one store (a directory, replaced atomically when written)::

    images   float32 (N, C, H, W), in the pipeline data's normalised space, chunked by sample
    labels   int64 (N,)

with ``kind = "image_set"``, ``num_classes``, ``sample_shape``, the data's ``mean``/``std``
and the writer's provenance in the root attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
import zarr.codecs  # an attribute of zarr at runtime, but only an imported submodule to a type checker

from compressflow.data.splits import Split
from compressflow.errors import InputError, one_line

__all__ = ["KIND", "read_image_set", "write_image_set"]

#: the ``kind`` attribute of an image-set store
KIND = "image_set"
_CHECKSUMMED = zarr.codecs.ZstdCodec(level=0, checksum=True)


def write_image_set(path: Path | str, images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
                    attrs: dict[str, Any] | None = None, samples_per_chunk: int = 256) -> Path:
    """Store ``images`` (N, C, H, W) as float32 and ``labels`` (N,) as int64 at ``path``; an
    existing store there is replaced only once the new one is complete.

    Returns
    -------
    Path
    """
    x = images.detach().cpu().float().numpy()
    y = labels.detach().cpu().to(torch.int64).numpy()
    if x.ndim != 4 or y.shape != (len(x),):
        raise ValueError(f"image set: images (N, C, H, W) and labels (N,), got {x.shape} and {y.shape}")

    def write(tmp: Path) -> None:
        root = zarr.open_group(str(tmp), mode="w")
        root.attrs.update({**(attrs or {}), "kind": KIND, "count": len(x), "num_classes": int(num_classes),
                           "sample_shape": list(x.shape[1:])})
        chunk = max(1, min(samples_per_chunk, len(x)))
        root.create_array("images", shape=x.shape, dtype="float32", chunks=(chunk, *x.shape[1:]),
                          compressors=_CHECKSUMMED)[:] = x
        root.create_array("labels", shape=y.shape, dtype="int64", chunks=(chunk,), compressors=_CHECKSUMMED)[:] = y

    from compressflow.rundir.files import replace_dir

    replace_dir(Path(path), write)
    return Path(path)


def read_image_set(path: Path | str, *, sample_shape: tuple[int, int, int], num_classes: int,
                   where: str = "image set") -> tuple[Split, dict[str, Any]]:
    """The images and labels of the store at ``path`` as a training :class:`Split`, with the
    store's attributes, checked against the pipeline's data.

    Parameters
    ----------
    sample_shape : tuple of int
        The pipeline's ``(C, H, W)``: every image must have it.
    num_classes : int
        Every label must be in ``0 … num_classes − 1``.
    where : str
        Names the input in messages (e.g. ``"distill.data"``).

    Raises
    ------
    InputError
        No store, not an image-set store, unreadable, empty, or images or labels that do not
        fit the pipeline's data: one line naming the store and what is wrong.
    """
    shown = repr(str(path))
    try:
        root = zarr.open_group(str(path), mode="r")
        attrs = dict(root.attrs)
    except (FileNotFoundError, NotADirectoryError, zarr.errors.GroupNotFoundError):
        raise InputError(f"{where}: no store at {shown}; run the 'synthesize' stage that writes it first") from None
    except Exception as exc:  # unparsable zarr.json, an array where the group belongs, ...
        raise InputError(f"{where}: {shown} is not a readable Zarr store ({type(exc).__name__}: "
                         f"{one_line(exc)}); re-run the 'synthesize' stage that writes it") from None
    if attrs.get("kind") != KIND:
        raise InputError(f"{where}: {shown} is not an image-set store (its attribute 'kind' is "
                         f"{attrs.get('kind')!r}, not {KIND!r}); give the output of a 'synthesize' stage")
    try:
        images, labels = root["images"], root["labels"]
        if not isinstance(images, zarr.Array) or not isinstance(labels, zarr.Array):
            raise TypeError("'images' and 'labels' must be arrays, not groups")
        x, y = np.asarray(images[:]), np.asarray(labels[:])
    except Exception as exc:  # a missing array or a damaged chunk
        raise InputError(f"{where}: {shown} cannot be read ({type(exc).__name__}: {one_line(exc)}); "
                         f"re-run the 'synthesize' stage that writes it") from None
    if x.dtype != np.float32 or y.dtype != np.int64 or x.ndim != 4 or y.shape != (len(x),):
        raise InputError(f"{where}: {shown} holds images {x.dtype} {x.shape} and labels {y.dtype} {y.shape}; "
                         f"an image set holds float32 (N, C, H, W) images and int64 (N,) labels")
    if len(x) == 0:
        raise InputError(f"{where}: {shown} holds no images; synthesize at least one")
    if not np.isfinite(x).all():
        raise InputError(f"{where}: {shown} holds non-finite pixels (NaN or infinity); re-run the 'synthesize' "
                         f"stage with a smaller lr")
    if tuple(x.shape[1:]) != tuple(sample_shape):
        raise InputError(f"{where}: {shown} holds images of shape {tuple(x.shape[1:])}, but the pipeline's data "
                         f"has {tuple(sample_shape)} (channels, height, width); synthesize them from a teacher "
                         f"of this pipeline's data")
    bad = y[(y < 0) | (y >= num_classes)]
    if bad.size:
        raise InputError(f"{where}: {shown} holds label {int(bad[0])}, outside the pipeline's classes "
                         f"0..{num_classes - 1}; synthesize them from a teacher of this pipeline's data")
    return Split(torch.from_numpy(x), torch.from_numpy(y)), attrs
