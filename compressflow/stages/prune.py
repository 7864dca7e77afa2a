"""``prune``: unstructured and structured pruning of a trained model (ALGORITHMS §4), with
optional joint distillation from the original and a biased-data option.

Methods (``PRUNERS``):

* ``magnitude`` — from the trained weights, zero the smallest |w| per layer and retrain; with
  ``rounds > 1`` iteratively (each round prunes the same fraction of what is left, reaching
  ``sparsity`` in the last round, and retrains ``epochs``).
* ``reinit`` — the magnitude mask of the trained model on freshly initialised weights,
  trained from scratch.
* ``random`` — a random mask of the same sparsity on fresh weights, trained from scratch.
* ``filters`` — structured: whole output filters of smallest L1 norm, pruned gradually on
  the AGP schedule (``agp_steps`` prunings spread over the first half of training, from
  10 % to ``sparsity``), then fine-tuned for the rest.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from compressflow.data import Splits, biased
from compressflow.energy import current_meter
from compressflow.errors import SpecError
from compressflow.flops import macs_per_sample
from compressflow.nn.models import build_model
from compressflow.nn.pruning import (agp_sparsity, apply_masks, filter_masks, layer_sparsity, magnitude_masks,
                                     make_permanent, prunable_layers, random_masks)
from compressflow.nn.surgery import replaceable_layers
from compressflow.nn.training import History, accuracy, cross_entropy, fit
from compressflow.records import Artifact, Record
from compressflow.registries import LOSSES, STAGES
from compressflow.stages._common import PositiveInt, Schedule, model_record
from compressflow.stages._context import StageContext
from compressflow.store import load_checkpoint

__all__ = ["METHODS", "prune"]

METHODS = ("magnitude", "reinit", "random", "filters")
Sparsity = Annotated[float, Field(gt=0, lt=1)]


@STAGES.register
def prune(
    ctx: StageContext,
    *,
    model: Artifact,
    teacher: Artifact | None = None,
    method: Literal["magnitude", "reinit", "random", "filters"] = "magnitude",
    sparsity: Sparsity = 0.5,
    rounds: PositiveInt = 1,
    agp_steps: PositiveInt = 4,
    distill: Literal["none", "kd", "at"] = "none",
    temperature: Annotated[float, Field(gt=0)] = 4.0,
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.9,
    at_beta: Annotated[float, Field(ge=0)] = 1000.0,
    biased_classes: tuple[int, ...] = (),
    biased_keep: Annotated[float, Field(gt=0, le=1)] = 1.0,
    schedule: Schedule = Schedule(epochs=10),
    seed: int = 0,
) -> Record:
    """Prune ``model`` (a trained checkpoint) to ``sparsity`` with ``method`` and (re)train it.

    Parameters
    ----------
    model : Artifact
        The trained original (``needs: {model: <stage>}``).
    teacher : Artifact, optional
        Distillation teacher for ``distill`` (default: the original ``model``).
    method : {"magnitude", "reinit", "random", "filters"}
    sparsity : float
        Fraction of each prunable layer's weights (or filters) zeroed, in (0, 1).
    rounds : int
        Iterative magnitude pruning rounds (``magnitude`` only), each retrained for ``epochs``.
    agp_steps : int
        Pruning steps of the AGP schedule (``filters``).
    distill : {"none", "kd", "at"}
        Train jointly with Hinton KD (``hkd`` at ``temperature``, weight ``alpha``) or attention
        transfer (cross-entropy + ``at_beta``/2 · Σ‖q_s − q_t‖₂ over four layers' normalised
        attention maps) from the teacher.
    biased_classes, biased_keep : tuple of int, float
        Keep only this fraction of the training samples of these classes (seeded).

    Returns
    -------
    Record
        As ``train``, plus ``original_accuracy`` (test), ``target_sparsity``, ``sparsity`` (achieved over the prunable
        layers), ``layer_sparsity`` (dim ``layer``), ``macs_dense`` and ``macs_effective``
        (MACs × each layer's weight density); artifact: the pruned checkpoint (masks baked in).
    """
    splits = ctx.splits()
    if biased_classes:
        splits = biased(splits, biased_classes, biased_keep, seed)
    original = load_checkpoint(model, ctx.device).eval()
    original_accuracy = accuracy(original, splits.test, device=ctx.device)
    name, kwargs = model.meta["model"], model.meta["kwargs"]
    loss_fn = _loss(ctx, distill, teacher or model, temperature, alpha, at_beta)
    gen = torch.Generator().manual_seed(seed)
    if method in ("reinit", "random"):
        masks = (magnitude_masks(original, sparsity) if method == "reinit"
                 else random_masks(original, sparsity, gen))
        torch.manual_seed(seed)
        net = build_model(name, **kwargs).to(ctx.device)
        apply_masks(net, masks)
        hist = _fit(ctx, net, splits, schedule, seed, loss_fn)
    elif method == "magnitude":
        net, hist = original, History()
        for r in range(1, rounds + 1):
            apply_masks(net, magnitude_masks(net, 1 - (1 - sparsity) ** (r / rounds)))
            hist = _fit(ctx, net, splits, schedule, seed + r, loss_fn, hist)
    else:
        net = original
        levels = agp_sparsity(sparsity, agp_steps)
        half = schedule.epochs / 2
        at_epoch = {round(k * half / max(1, agp_steps - 1)): s for k, s in enumerate(levels)}
        apply_masks(net, filter_masks(net, at_epoch.pop(0)))

        def agp(epoch: int, _: History) -> None:
            if epoch in at_epoch:
                apply_masks(net, filter_masks(net, at_epoch[epoch]))

        hist = _fit(ctx, net, splits, schedule, seed, loss_fn, on_epoch=agp)
    make_permanent(net)
    per_layer = layer_sparsity(net)
    layers = prunable_layers(net)
    sizes = np.array([net.get_submodule(n).weight.numel() for n in layers], dtype=float)
    density = {n: 1 - per_layer[n] for n in layers}
    extra = {
        "target_sparsity": sparsity,
        "original_accuracy": original_accuracy,
        "sparsity": float(np.sum([per_layer[n] * k for n, k in zip(layers, sizes)]) / sizes.sum()),
        "layer_sparsity": ("layer", np.array([per_layer[n] for n in layers])),
        "layer": ("layer", layers),
        "macs_dense": macs_per_sample(net, splits.sample_shape),
        "macs_effective": _effective_macs(net, splits.sample_shape, density),
    }
    return model_record(ctx, net, hist, name, kwargs, extra)


def _check_rounds(spec, name: str) -> None:
    """Iterative rounds only make sense for ``magnitude`` (the others train from scratch)."""
    st = spec.stages[name]
    rounds = [st.params["rounds"]] if "rounds" in st.params else st.sweep.get("rounds", [1])
    methods = [st.params.get("method", "magnitude")] if "method" not in st.sweep else st.sweep["method"]
    bad = [m for m in methods if m != "magnitude"]
    if max(rounds) > 1 and bad:
        raise SpecError(f"stages.{name}.params.rounds: iterative pruning (rounds > 1) is for method 'magnitude' only, "
                        f"not {bad[0]!r}; use rounds: 1 or a separate stage")


prune.check_spec = _check_rounds


def _fit(ctx: StageContext, net: torch.nn.Module, splits: Splits, schedule: Schedule, seed: int, loss_fn,
         before: History | None = None, on_epoch=None) -> History:
    def report(epoch: int, hist: History) -> None:
        if on_epoch is not None:
            on_epoch(epoch, hist)
        ctx.progress(epoch=epoch, of=schedule.epochs, loss=hist.train_loss[-1], val_accuracy=hist.val_accuracy[-1])

    if isinstance(loss_fn, _AttentionTransfer):
        loss_fn.attach(net)
    hist = fit(net, splits, seed=seed, loss_fn=loss_fn, device=ctx.device, on_epoch=report,
               energy=current_meter().energy_so_far, **schedule.model_dump())
    if before is None or not before.val_accuracy:
        return hist
    offset = before.elapsed_s[-1] if before.elapsed_s else 0.0
    before.elapsed_s.extend(offset + t for t in hist.elapsed_s)
    for field in ("train_loss", "train_accuracy", "val_accuracy", "lr", "energy_kwh"):  # rounds, in order
        getattr(before, field).extend(getattr(hist, field))
    before.train_time_s += hist.train_time_s
    before.train_samples += hist.train_samples
    before.eval_samples += hist.eval_samples
    return before


def _loss(ctx: StageContext, distill: str, teacher: Artifact, temperature: float, alpha: float, beta: float):
    if distill == "none":
        return cross_entropy
    t_net = load_checkpoint(teacher, ctx.device).eval()
    t_net.requires_grad_(False)
    if distill == "kd":
        hkd = LOSSES.get("hkd")

        def kd_loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                t_logits = t_net(x)
            return hkd(logits, t_logits, y, temperature, alpha=alpha)

        return kd_loss
    return _AttentionTransfer(t_net, beta)


class _AttentionTransfer:
    """Cross-entropy + β/2 · Σ_j mean over the batch of ‖q_s,j − q_t,j‖₂, where q is a layer's
    attention map (mean over channels of the squared activation, flattened, L2-normalised)
    at four evenly spaced replaceable convs (Zagoruyko & Komodakis 2017). The student's maps
    are captured by forward hooks during its own forward pass, found by layer name (the
    pruned student has the teacher's architecture)."""

    def __init__(self, teacher: torch.nn.Module, beta: float) -> None:
        names = replaceable_layers(teacher)
        self.layers = [names[round(i)] for i in np.linspace(0, len(names) - 1, 4)]
        self.teacher, self.beta = teacher, beta
        self.student_maps: dict[str, torch.Tensor] = {}
        self.hooked: torch.nn.Module | None = None

    def attach(self, student: torch.nn.Module) -> None:
        """Capture ``student``'s maps during its forward passes (once per model)."""
        if self.hooked is student:
            return
        for name in self.layers:
            student.get_submodule(name).register_forward_hook(
                lambda m, i, o, name=name: self.student_maps.__setitem__(name, o))
        self.hooked = student

    @staticmethod
    def _q(a: torch.Tensor) -> torch.Tensor:
        return F.normalize(a.pow(2).mean(1).flatten(1), dim=1)

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        maps: dict[str, torch.Tensor] = {}
        handles = [self.teacher.get_submodule(n).register_forward_hook(
            lambda m, i, o, n=n: maps.__setitem__(n, o)) for n in self.layers]
        with torch.no_grad():
            self.teacher(x)
        for h in handles:
            h.remove()
        at = sum((self._q(self.student_maps[n]) - self._q(maps[n])).norm(dim=1).mean() for n in self.layers)
        return F.cross_entropy(logits, y) + self.beta / 2 * at


def _effective_macs(net: torch.nn.Module, shape: tuple[int, ...], density: dict[str, float]) -> float:
    """Forward MACs if every pruned layer skipped its zero weights: each layer's MACs × its
    weight density (unpruned layers count in full)."""
    total = macs_per_sample(net, shape)
    for name, d in density.items():
        layer_macs = _layer_macs(net, name, shape)
        total -= layer_macs * (1 - d)
    return float(total)


def _layer_macs(net: torch.nn.Module, name: str, shape: tuple[int, ...]) -> float:
    seen: dict[str, torch.Size] = {}

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        seen["in"] = inputs[0].shape

    h = net.get_submodule(name).register_forward_hook(hook)
    with torch.no_grad():
        net.eval()(torch.zeros(1, *shape))
    h.remove()
    return float(macs_per_sample(net.get_submodule(name), tuple(seen["in"][1:])))
