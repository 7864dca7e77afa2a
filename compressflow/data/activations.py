"""The Zarr activation store: what a model's layers receive and produce on a fixed set of
inputs, written once and read by many tasks (blockwise distillation reads one layer's
inputs/targets; representation comparisons read a layer of two models).

Layout of one store (a directory, replaced atomically when written)::

    <layer>/<split>/in    float32 (N, C, H, W), chunked by sample, zstd-compressed with checksums
    <layer>/<split>/out   float32 (N, C', H', W')

with the writer's provenance (model hash, data, layers, splits) in the root attributes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import zarr
import zarr.codecs  # an attribute of zarr at runtime, but only an imported submodule to a type checker
from torch import nn

from compressflow.errors import InputError, one_line

# zstd's frame checksum: a chunk changed after writing fails to decode instead of reading as other numbers
_CHECKSUMMED = zarr.codecs.ZstdCodec(level=0, checksum=True)

__all__ = ["StoredArray", "read_layer", "read_output", "store_info", "write_activations"]


@torch.no_grad()
def write_activations(model: nn.Module, inputs: Mapping[str, torch.Tensor], layers: Sequence[str], path: Path | str,
                      *, batch_size: int = 256, samples_per_chunk: int = 256,
                      attrs: dict[str, Any] | None = None, kinds: tuple[str, ...] = ("in", "out")) -> Path:
    """Run ``model`` (eval mode) once over each split of ``inputs`` and store, for every layer
    in ``layers``, the tensors entering and leaving it.

    One forward pass per batch captures all layers at once (forward hooks), so the model
    runs once per sample however many layers are cached.

    Parameters
    ----------
    model : nn.Module
    inputs : mapping split name -> Tensor (N, C, H, W)
    layers : sequence of str
        Module names (``model.named_modules()``).
    path : path
        The store directory; an existing store there is replaced only once the new one is complete.
    batch_size, samples_per_chunk : int
        Forward batch size; Zarr chunk length along the sample axis.
    kinds : tuple of str
        What to keep of each layer: ``"in"`` (the tensor entering it) and/or ``"out"``.
    attrs : dict, optional
        Provenance to keep in the store's attributes.

    Returns
    -------
    Path
    """
    was_training = model.training
    model.eval()
    modules = {name: model.get_submodule(name) for name in layers}

    def write(tmp: Path) -> None:
        root = zarr.open_group(str(tmp), mode="w")
        root.attrs.update({**(attrs or {}), "layers": list(layers), "splits": list(inputs), "kinds": list(kinds)})
        for split, x in inputs.items():
            arrays: dict[tuple[str, str], Any] = {}
            for start in range(0, len(x), batch_size):
                batch = _capture(model, modules, x[start:start + batch_size])
                for (layer, kind), value in batch.items():
                    if kind not in kinds:
                        continue
                    arr = arrays.get((layer, kind))
                    if arr is None:
                        arr = arrays[(layer, kind)] = root.create_array(
                            f"{layer}/{split}/{kind}", shape=(len(x), *value.shape[1:]), dtype="float32",
                            chunks=(min(samples_per_chunk, len(x)), *value.shape[1:]),
                            compressors=_CHECKSUMMED,
                        )
                    arr[start:start + len(value)] = value

    # late: importing compressflow.ops registers the built-in ops, and ops.blockwise imports this module
    from compressflow.rundir.files import replace_dir

    try:
        replace_dir(Path(path), write)
    finally:
        model.train(was_training)
    return Path(path)


def _capture(model: nn.Module, modules: dict[str, nn.Module], x: torch.Tensor) -> dict[tuple[str, str], np.ndarray]:
    seen: dict[tuple[str, str], np.ndarray] = {}
    handles = []
    for name, module in modules.items():
        def hook(m, i, o, name=name):
            seen[(name, "in")] = i[0].detach().float().cpu().numpy()
            seen[(name, "out")] = o.detach().float().cpu().numpy()
        handles.append(module.register_forward_hook(hook))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def store_info(path: Path | str) -> dict[str, Any]:
    """The store's attributes (layers, splits and the writer's provenance).

    Raises
    ------
    InputError
        No store at ``path``, or one that is not a readable activation store.
    """
    return dict(_open(path).attrs)


def read_layer(path: Path | str, layer: str, split: str) -> tuple[StoredArray, StoredArray]:
    """The lazily read ``in`` and ``out`` arrays of one layer on one split (slice them to load).

    Raises
    ------
    InputError
        Unknown layer or split (the message lists the stored ones), or a store that cannot
        be read (also when a slice meets a corrupted chunk): one line naming the store.
    """
    root = _open(path)
    _check_stored(root, path, layer, split)
    return _array(root, path, f"{layer}/{split}/in"), _array(root, path, f"{layer}/{split}/out")


def read_output(path: Path | str, layer: str, split: str) -> StoredArray:
    """The lazily read ``out`` array of one layer on one split (see :func:`read_layer`)."""
    root = _open(path)
    _check_stored(root, path, layer, split)
    return _array(root, path, f"{layer}/{split}/out")


class StoredArray:
    """One array of an activation store, read when sliced; a chunk that cannot be decoded
    (corrupted, truncated, deleted) is an :class:`InputError` naming the store, not a codec's
    traceback from deep inside a task."""

    def __init__(self, array: zarr.Array, store: Path | str, name: str) -> None:
        self._array, self._store, self.name = array, store, name

    shape = property(lambda self: self._array.shape)
    chunks = property(lambda self: self._array.chunks)
    dtype = property(lambda self: self._array.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, selection: Any) -> np.ndarray:
        try:
            return np.asarray(self._array[selection])
        except (IndexError, TypeError) as exc:  # a caller's bad index, not a bad store
            raise IndexError(f"activations: {self.name} of {str(self._store)!r}: {exc}") from None
        except Exception as exc:  # zstd/JSON/shape errors of a damaged chunk
            raise _unreadable(self._store, f"array {self.name!r}: {type(exc).__name__}: {one_line(exc)}") from None


def _array(root: zarr.Group, path: Path | str, name: str) -> StoredArray:
    try:
        array = root[name]
    except KeyError:
        raise InputError(f"activations: {str(path)!r} holds no {name.rsplit('/', 1)[-1]!r} arrays (it keeps "
                         f"{', '.join(cast(list[str], root.attrs.get('kinds', ['?'])))}); it was written by another stage") from None
    except Exception as exc:
        raise _unreadable(path, f"array {name!r}: {type(exc).__name__}: {one_line(exc)}") from None
    if not isinstance(array, zarr.Array):
        raise _unreadable(path, f"{name!r} is a group, not an array")
    return StoredArray(array, path, name)


def _check_stored(root: zarr.Group, path: Path | str, layer: str, split: str) -> None:
    # the writer stores these two attributes as lists of names (zarr types attributes as any JSON)
    layers, splits = cast(list[str], root.attrs["layers"]), cast(list[str], root.attrs["splits"])
    if layer not in layers:
        raise InputError(f"activations: layer {layer!r} is not in {str(path)!r}; stored: {', '.join(layers)}")
    if split not in splits:
        raise InputError(f"activations: split {split!r} is not in {str(path)!r}; stored: {', '.join(splits)}")


def _open(path: Path | str) -> zarr.Group:
    try:
        root = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, NotADirectoryError, zarr.errors.GroupNotFoundError):
        raise InputError(f"activations: no store at {str(path)!r}; run the stage that writes it first") from None
    except Exception as exc:  # unparsable zarr.json, an array where the group belongs, ...
        raise _unreadable(path, f"{type(exc).__name__}: {one_line(exc)}") from None
    attrs = root.attrs
    for key in ("layers", "splits"):
        value = attrs.get(key)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _unreadable(path, f"its attributes have no list of {key!r}")
    return root


def _unreadable(path: Path | str, detail: str) -> InputError:
    return InputError(f"activations: {str(path)!r} is not a readable activation store ({detail}); "
                      "re-run the stage that writes it (delete its record to force that)")
