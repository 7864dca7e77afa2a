"""``prune``: unstructured and structured pruning of a trained model (Blakeney 2023,
PhD dissertation, Texas State University; AGP: Zhu & Gupta 2017, arXiv:1710.01878), with
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

Every random stream of a prune task (the fresh initialisation, the random mask, the batch
order) is seeded from ``(method, seed, purpose)`` through :func:`derived_seed`, never from
``seed`` alone: ``train`` seeds its initialisation and batch order with the plain seed, so a
``reinit`` at seed 0 of an original trained at seed 0 would otherwise start from the
original's own initial weights and see its batches in the same order (a re-initialisation
must draw fresh weights).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Annotated, Literal, cast

import numpy as np
from pydantic import Field

from compressflow.errors import InputError, SpecError
from compressflow.ops import (Artifact, OpContext, PositiveInt, Record, Schedule, check_schedule, load_checkpoint,
                              model_record, stage_model)
from compressflow.registries import OPS

if TYPE_CHECKING:
    import torch

    from compressflow.data import Splits
    from compressflow.nn.training import History

__all__ = ["DISTILL", "derived_seed", "fresh_model", "prune"]

DISTILL = ("none", "kd", "at", "kd+at")
Sparsity = Annotated[float, Field(gt=0, lt=1)]


def _check_rounds(spec, name: str) -> None:
    """Iterative rounds only make sense for ``magnitude`` (the others train from scratch)."""
    st = spec.stages[name]
    rounds = [st.params["rounds"]] if "rounds" in st.params else st.sweep.get("rounds", [1])
    methods = [st.params.get("method", "magnitude")] if "method" not in st.sweep else st.sweep["method"]
    bad = [m for m in methods if m != "magnitude"]
    if max(rounds) > 1 and bad:
        raise SpecError(f"stages.{name}.params.rounds: iterative pruning (rounds > 1) is for method 'magnitude' only, "
                        f"not {bad[0]!r}; use rounds: 1 or a separate stage")


def _check_attention(spec, name: str) -> None:
    """Attention transfer needs the stages (residual groups) of the student and the teacher,
    the same number of each: checked on the architectures the spec names, before any task
    (a ``model_check``: it builds them on the meta device)."""
    from compressflow.nn.architectures import stage_outputs

    st = spec.stages[name]
    modes = st.sweep.get("distill", [st.params.get("distill", "none")])
    if not any(m in ("at", "kd+at") for m in modes):
        return
    found = {}
    for arg in ("model", "teacher"):
        built = stage_model(spec, st.needs.get(arg))
        if built is not None:
            try:
                found[arg] = (built[0], stage_outputs(built[1]))
            except InputError as exc:
                raise SpecError(f"stages.{name}.params.distill: attention transfer on model {built[0]!r}: "
                                f"{exc}") from None
    if len(found) == 2 and len(found["model"][1]) != len(found["teacher"][1]):
        (m, a), (t, b) = found["model"], found["teacher"]
        raise SpecError(f"stages.{name}.params.distill: attention transfer pairs the stages of model {m!r} "
                        f"({len(a)}: {', '.join(a)}) with those of teacher {t!r} ({len(b)}: {', '.join(b)}); "
                        f"use a teacher with as many stages, or distill: kd")


def _check_spec(spec, name: str) -> None:
    """The spec-time check of a prune stage: rounds, and the from-scratch schedule of
    ``reinit``/``random``."""
    _check_rounds(spec, name)
    st = spec.stages[name]
    if {"reinit", "random"} & set(st.sweep.get("method", [st.params.get("method", "magnitude")])):
        check_schedule(spec, name)  # these train from scratch; magnitude/filters fine-tune




@OPS.register(check=_check_spec, model_check=_check_attention)
def prune(
    ctx: OpContext,
    *,
    model: Artifact,
    teacher: Artifact | None = None,
    method: Literal["magnitude", "reinit", "random", "filters"] = "magnitude",
    sparsity: Sparsity = 0.5,
    rounds: PositiveInt = 1,
    agp_steps: PositiveInt = 4,
    distill: Literal["none", "kd", "at", "kd+at"] = "none",
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
    distill : {"none", "kd", "at", "kd+at"}
        Train jointly with Hinton KD (``hkd`` at ``temperature``, weight ``alpha``), attention
        transfer (Zagoruyko & Komodakis 2017, arXiv:1612.03928: ``at_beta · Σ_groups mean((q_s − q_t)²)`` over the attention
        maps at the outputs of the network's residual groups, see :func:`compressflow.nn.attention.attention_transfer`)
        added to cross-entropy, or both (the AT term added to the KD loss) from the teacher.
    biased_classes, biased_keep : tuple of int, float
        Keep only this fraction of the training samples of these classes (seeded).
    seed : int
        Seeds the task's random streams through :func:`derived_seed` with the method, so a
        fresh initialisation never replays the original's (``train``'s) for any seed.

    Returns
    -------
    Record
        As ``train``, plus ``original_accuracy`` (test), ``target_sparsity``, ``sparsity`` (achieved over the prunable
        layers), ``layer_sparsity`` (dim ``layer``), ``macs_dense`` and ``macs_effective``
        (MACs × each layer's weight density); artifact: the pruned checkpoint (masks baked in).
    """
    import torch

    from compressflow.data import biased
    from compressflow.metrics.flops import effective_macs, macs_per_sample
    from compressflow.nn.pruning import (agp_sparsity, apply_masks, filter_masks, layer_sparsity, magnitude_masks,
                                         make_permanent, prunable_layers, random_masks)
    from compressflow.nn.training import History, accuracy

    splits = ctx.splits()
    if biased_classes:
        splits = biased(splits, biased_classes, biased_keep, seed)
    original = load_checkpoint(model, ctx.device).eval()
    original_accuracy = accuracy(original, splits.test, device=ctx.device)
    name, kwargs = model.meta["model"], model.meta["kwargs"]
    loss_fn = _loss(ctx, distill, teacher or model, temperature, alpha, at_beta)
    if method in ("reinit", "random"):
        mask_gen = torch.Generator().manual_seed(derived_seed(method, seed, "mask"))
        masks = (magnitude_masks(original, sparsity) if method == "reinit"
                 else random_masks(original, sparsity, mask_gen))
        net = fresh_model(name, kwargs, method, seed).to(ctx.device)
        apply_masks(net, masks)
        hist = _fit(ctx, net, splits, schedule, derived_seed(method, seed, "data"), loss_fn)
    elif method == "magnitude":
        net, hist = original, History()
        for r in range(1, rounds + 1):
            apply_masks(net, magnitude_masks(net, 1 - (1 - sparsity) ** (r / rounds)))
            hist = _fit(ctx, net, splits, schedule, derived_seed(method, seed, f"data/round{r}"), loss_fn, hist)
    else:
        net = original
        levels = agp_sparsity(sparsity, agp_steps)
        half = schedule.epochs / 2
        at_epoch = {round(k * half / max(1, agp_steps - 1)): s for k, s in enumerate(levels)}
        apply_masks(net, filter_masks(net, at_epoch.pop(0)))

        def agp(epoch: int, _: History) -> None:
            if epoch in at_epoch:
                apply_masks(net, filter_masks(net, at_epoch[epoch]))

        hist = _fit(ctx, net, splits, schedule, derived_seed(method, seed, "data"), loss_fn, on_epoch=agp)
    make_permanent(net)
    per_layer = layer_sparsity(net)
    layers = prunable_layers(net)
    sizes = np.array([cast(torch.Tensor, net.get_submodule(n).weight).numel() for n in layers], dtype=float)
    density = {n: 1 - per_layer[n] for n in layers}
    extra = {
        "target_sparsity": sparsity,
        "original_accuracy": original_accuracy,
        "sparsity": float(np.sum([per_layer[n] * k for n, k in zip(layers, sizes)]) / sizes.sum()),
        "layer_sparsity": ("layer", np.array([per_layer[n] for n in layers])),
        "layer": ("layer", layers),
        "macs_dense": macs_per_sample(net, splits.sample_shape),
        "macs_effective": effective_macs(net, splits.sample_shape, density),
    }
    return model_record(ctx, net, hist, name, kwargs, extra)


def derived_seed(method: str, seed: int, purpose: str) -> int:
    """A 63-bit seed for one random stream of a prune task: the first 8 bytes of
    sha256(``"compressflow.prune/<method>/<purpose>/<seed>"``), top bit cleared.

    Stable across processes and Python versions (unlike the salted ``hash()``), different
    per method and purpose, and — being a hash, not ``seed`` itself — never the plain seed
    that ``train`` gives ``torch.manual_seed`` (for the original's initialisation) and its
    batch order.

    Examples
    --------
    >>> derived_seed("reinit", 0, "init") == derived_seed("reinit", 0, "init") != 0
    True
    """
    text = f"compressflow.prune/{method}/{purpose}/{int(seed)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def fresh_model(name: str, kwargs: dict, method: str, seed: int) -> torch.nn.Module:
    """The freshly initialised model a ``reinit``/``random`` task starts from: ``build_model``
    under ``torch.manual_seed(derived_seed(method, seed, "init"))``."""
    import torch

    from compressflow.nn.models import build_model

    torch.manual_seed(derived_seed(method, seed, "init"))
    return build_model(name, **kwargs)


def _fit(ctx: OpContext, net: torch.nn.Module, splits: Splits, schedule: Schedule, seed: int, loss_fn,
         before: History | None = None, on_epoch=None) -> History:
    """:meth:`OpContext.fit` with the teacher's hooks attached, the rounds' histories joined."""
    from compressflow.nn.attention import TeacherLoss

    handles = loss_fn.attach(net) if isinstance(loss_fn, TeacherLoss) else []
    try:
        hist = ctx.fit(net, schedule, seed=seed, loss_fn=loss_fn, splits=splits, on_epoch=on_epoch)
    finally:
        for h in handles:
            h.remove()
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


def _loss(ctx: OpContext, distill: str, teacher: Artifact, temperature: float, alpha: float, beta: float):
    from compressflow.nn.attention import TeacherLoss
    from compressflow.nn.training import cross_entropy

    if distill == "none":
        return cross_entropy
    t_net = load_checkpoint(teacher, ctx.device).eval()
    t_net.requires_grad_(False)
    return TeacherLoss(t_net, kd=(temperature, alpha) if "kd" in distill else None,
                       at_beta=beta if "at" in distill else None)
