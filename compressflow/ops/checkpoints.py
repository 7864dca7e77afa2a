"""Checkpoints: hashed files of a model's weights and what rebuilds it, read weights-only (a
file cannot run code). Part of the op contract (:mod:`compressflow.ops`); torch is imported
when a checkpoint is saved or loaded, not with this module."""

from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compressflow.errors import InputError, one_line
from compressflow.rundir.files import atomic_write_bytes
from compressflow.rundir.records import Artifact, artifact_problem

if TYPE_CHECKING:
    import torch

__all__ = ["load_checkpoint", "load_weights", "save_checkpoint"]


def save_checkpoint(model: torch.nn.Module, path: Path, *, model_name: str, model_kwargs: dict[str, Any],
                    surgery: dict[str, str] | None = None) -> Artifact:
    """Save ``model``'s weights with what is needed to rebuild it; atomic.

    Parameters
    ----------
    surgery : dict, optional
        ``{layer name: block name}`` for a model whose layers were replaced by registered
        blocks (blockwise distillation); the loader rebuilds those blocks before loading.

    Returns
    -------
    Artifact
        ``kind="checkpoint"``, with the model name, build kwargs and surgery in ``meta``.
    """
    import torch

    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    meta = {"model": model_name, "kwargs": dict(model_kwargs), "surgery": dict(surgery or {})}
    torch.save({**meta, "state_dict": state}, buf)
    atomic_write_bytes(path, buf.getvalue())
    digest = hashlib.sha256(buf.getvalue()).hexdigest()
    return Artifact("checkpoint", str(Path(path).resolve()), digest, meta)


def load_checkpoint(artifact: Artifact, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Rebuild the model of a checkpoint artifact (weights only: a checkpoint cannot run code).

    Raises
    ------
    InputError
        If the file is missing, its hash differs from the artifact's, or it is not a
        compressflow checkpoint that rebuilds its model (not a weights-only torch file, keys
        missing, an unknown model, weights of the wrong names or shapes): one line naming the file.
    """
    from compressflow.nn.blocks import make_block
    from compressflow.nn.models import build_model
    from compressflow.nn.surgery import set_module

    blob = load_weights(artifact, device)
    bad = functools.partial(_not_a, artifact)
    expected = {"model": str, "kwargs": dict, "state_dict": dict, "surgery": dict}
    for key, kind in expected.items():
        if key not in blob and key != "surgery":
            raise bad(f"no {key!r} entry; it holds {', '.join(map(repr, blob)) or 'nothing'}")
        if key in blob and not isinstance(blob[key], kind):
            raise bad(f"{key!r} is a {type(blob[key]).__name__}, not a {kind.__name__}")
    try:
        model = build_model(blob["model"], **blob["kwargs"])
        for layer, block in blob.get("surgery", {}).items():
            set_module(model, layer, make_block(block, model.get_submodule(layer)))
        model.load_state_dict(blob["state_dict"])
    except Exception as exc:  # unknown model/block, bad kwargs, missing or misshapen weights
        raise bad(f"{type(exc).__name__}: {one_line(exc)}") from None
    return model.to(device)


def load_weights(artifact: Artifact, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The dict saved in a checkpoint or block artifact, verified against its recorded sha256
    and read weights-only (a file cannot run code).

    Raises
    ------
    InputError
        If the file is missing, its hash differs from the artifact's, or it is not a
        weights-only torch file holding a dict: one line naming the file.
    """
    import torch

    problem = artifact_problem(artifact)
    if problem is not None:
        raise InputError(f"{problem}; re-run the stage that produced it")
    try:
        blob = torch.load(Path(artifact.path), map_location=device, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ... for foreign bytes
        raise _not_a(artifact, f"{type(exc).__name__}: {_torch_load_detail(exc)}") from None
    if not isinstance(blob, dict):
        raise _not_a(artifact, f"it holds a {type(blob).__name__}, not a dict")
    return blob


def _not_a(artifact: Artifact, what: str) -> InputError:
    # the hash matched, so the record itself points at this file: it was written so, or both were edited
    return InputError(f"{artifact.kind} {artifact.path!r} is not a compressflow {artifact.kind} ({what}); "
                      "re-run the stage that produced it")


def _torch_load_detail(exc: BaseException) -> str:
    """What went wrong in ``torch.load``, without its page of advice (which ends by suggesting
    ``weights_only=False``: exactly what must not be done with a file that fails here)."""
    text = str(exc)
    if text.startswith("Weights only load failed"):
        lines = [line.split("WeightsUnpickler error:")[-1].strip() for line in text.splitlines()[1:]]
        text = " ".join(line for line in lines if line and not line.startswith("Check the documentation"))
    return one_line(text or type(exc).__name__)
