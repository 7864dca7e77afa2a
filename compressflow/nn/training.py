"""The supervised training loop every training-like stage shares (``train`` now; ``distill``
and ``prune`` plug in their own loss): SGD with momentum, a linear warm-up, step decay at
fractions of the run (ALGORITHMS §1: ×0.2 at epochs 30/60/80 of 100), per-epoch curves, and a resumable state after any epoch (:func:`fit`'s ``checkpoint`` and
``resume``: a run stopped after epoch k and resumed from its state ends exactly as one that
never stopped).

Models and batches use the channels-last memory layout: on CPU its oneDNN kernels trained
MobileNetV2 1.6× and ResNet18 1.2× faster here than the default layout (and tensor cores
prefer it on GPUs)."""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from compressflow.data import Split, Splits, batches

__all__ = ["RESUME_FORMAT", "History", "ResumeMismatch", "Stateful", "accuracy", "cross_entropy", "fit", "memory_format", "predict",
           "optimizer_with_schedule"]

#: version of the resumable state :func:`fit` checkpoints (a state of another version is not resumed)
RESUME_FORMAT = 1

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(student_logits, inputs, labels) -> scalar``; inputs let KD losses run a teacher."""


def memory_format(device: torch.device | str) -> torch.memory_format:
    """``channels_last`` on a GPU (faster convolutions), contiguous on the CPU.

    On the CPU, torch 2.14's channels-last backward corrupts the heap for some narrow networks
    (WRN-16-1 at width 0.25, 4-channel blocks: "double free or corruption", the worker dies),
    so CPU training keeps the default layout.
    """
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format


def cross_entropy(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y)


@dataclass
class History:
    """Per-epoch curves of one training run and its training-step timing."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    energy_kwh: list[float] = field(default_factory=list)  # cumulative at each epoch's end (when metered)
    elapsed_s: list[float] = field(default_factory=list)  # cumulative wall time at each epoch's end
    train_samples: int = 0
    eval_samples: int = 0
    train_time_s: float = 0.0


#: the optimizers a schedule may name, built from (parameters, base rate, momentum, weight decay)
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda params, lr, momentum, wd: torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd),
    "adam": lambda params, lr, momentum, wd: torch.optim.Adam(params, lr=lr, weight_decay=wd),
    "adamw": lambda params, lr, momentum, wd: torch.optim.AdamW(params, lr=lr, weight_decay=wd),
}


class Stateful(Protocol):
    """Something besides the model whose state a resumed run needs (e.g. a stochastic
    temperature policy's random stream): ``state_dict()`` of plain values and tensors."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class ResumeMismatch(ValueError):
    """A resumable state that does not belong to this run (another schedule, data size or
    model); raised by :func:`fit` before it changes anything, so the caller may start afresh."""


def optimizer_with_schedule(
    model: torch.nn.Module,
    *,
    lr: float,
    batch_size: int,
    epochs: int,
    steps_per_epoch: int,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    warmup_epochs: float = 1.0,
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8),
    gamma: float = 0.2,
    optimizer: str = "sgd",
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """An optimizer whose rate is ``lr × batch_size / 128``, warmed up linearly over
    ``warmup_epochs`` and multiplied by ``gamma`` at each milestone (a fraction of
    ``epochs``); stepped per batch.

    ``optimizer`` is ``"sgd"`` (momentum, L2 weight decay: STKD's code), ``"adam"`` (L2 weight
    decay added to the gradient: the optimizer STKD's text names) or ``"adamw"`` (decoupled
    weight decay); ``momentum`` is SGD's only. Adam's steps do not scale with the gradient's
    magnitude (e.g. DML's and CMC's 1/τ² at a fixed τ)."""
    base = lr * batch_size / 128
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    opt = OPTIMIZERS[optimizer](model.parameters(), base, momentum, weight_decay)
    warm = max(1, round(warmup_epochs * steps_per_epoch)) if warmup_epochs > 0 else 0
    edges = [max(1, round(m * epochs * steps_per_epoch)) for m in milestones]  # never before the first step

    def factor(step: int) -> float:
        decay = gamma ** sum(step >= e for e in edges)
        return decay * min(1.0, (step + 1) / warm) if warm else decay

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def fit(
    model: torch.nn.Module,
    splits: Splits,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    warmup_epochs: float = 1.0,
    milestones: tuple[float, ...] = (0.3, 0.6, 0.8),
    gamma: float = 0.2,
    optimizer: str = "sgd",
    augment: bool = True,
    loss_fn: LossFn = cross_entropy,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, History], None] | None = None,
    energy: Callable[[], float] | None = None,
    resume: Mapping[str, Any] | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_every: int | None = None,
    stateful: Sequence[Stateful] = (),
    stop_after: int | None = None,
) -> History:
    """Train ``model`` in place on ``splits.train``, evaluating on ``splits.val`` every epoch.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place (left in eval mode at the end).
    splits : Splits
        Data; its ``augment`` ops are applied to training batches when ``augment``.
    epochs, batch_size, lr, momentum, weight_decay, warmup_epochs, milestones, gamma, optimizer
        The schedule of :func:`optimizer_with_schedule`.
    seed : int
        Seeds batch order and augmentation (the model's init is seeded by the caller).
    loss_fn : callable
        ``loss_fn(logits, x, y)``; cross-entropy by default.
    on_epoch : callable, optional
        ``on_epoch(epoch, history)`` after each epoch (progress reporting).
    energy : callable, optional
        Returns the energy (kWh) measured so far; read after each epoch into
        ``history.energy_kwh`` (an op's :meth:`~compressflow.ops.OpContext.fit` passes its
        task meter's ``energy_so_far``).
    resume : mapping, optional
        A state ``checkpoint`` was given earlier: the model, optimizer, LR schedule, the
        batch generator, torch's global RNG (and CUDA's), ``stateful`` and the history are
        restored and training continues at the epoch after it; the curves continue (energy
        = the saved energy + ``energy()``, elapsed time likewise). A state of a finished run
        restores the model and returns its history at once.
    checkpoint : callable, optional
        ``checkpoint(state)`` every ``checkpoint_every`` epochs, after the last, and when
        ``on_epoch`` raises (e.g. a cancelled task): the state after that epoch, which
        ``resume`` takes. Its tensors are the live ones: serialise (``torch.save``) or copy
        them before returning.
    checkpoint_every : int
        Epochs between checkpoints (>= 1); required with ``checkpoint`` (the spec owns its
        default, :meth:`compressflow.spec.PipelineSpec.checkpoint_every_of`).
    stateful : sequence, optional
        Further objects whose ``state_dict()`` belongs to the state (e.g. the loss's own
        random stream).
    stop_after : int, optional
        Stop after this epoch of the ``epochs``-epoch schedule (the rates stay those of the
        full run) and checkpoint it: a search's budget. A state resumed at or past it trains
        nothing and returns its history.

    Returns
    -------
    History

    Raises
    ------
    ResumeMismatch
        ``resume`` belongs to another run (schedule, seed, data size or model differ), or is
        not a state of this version; nothing was changed.
    """
    if checkpoint is not None and (not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool)
                                   or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be an integer >= 1 with a checkpoint, got {checkpoint_every!r}")
    config = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": seed, "momentum": momentum,
              "weight_decay": weight_decay, "warmup_epochs": warmup_epochs, "milestones": [float(m) for m in milestones],
              "gamma": gamma, "optimizer": optimizer, "augment": augment, "train_samples": len(splits.train)}
    if resume is not None:
        problem = _resume_problem(resume, config, model, len(stateful))
        if problem:
            raise ResumeMismatch(problem)
    steps = -(-len(splits.train) // batch_size)
    model.to(memory_format=memory_format(device))
    opt, sched = optimizer_with_schedule(
        model, lr=lr, batch_size=batch_size, epochs=epochs, steps_per_epoch=steps, momentum=momentum,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, milestones=milestones, gamma=gamma,
        optimizer=optimizer,
    )
    gen = torch.Generator().manual_seed(seed)
    ops = splits.augment if augment else ()
    hist = History()
    first, energy_before, elapsed_before = 1, 0.0, 0.0
    if resume is not None:
        hist = _restore(resume, model, opt, sched, gen, stateful)
        first = int(resume["epoch"]) + 1
        energy_before = float(resume["energy_kwh"]) if math.isfinite(resume["energy_kwh"]) else 0.0
        elapsed_before = float(resume["elapsed_s"])

    def state(epoch: int) -> dict[str, Any]:
        return {
            "format": RESUME_FORMAT, "epoch": epoch, "config": config,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "generator": gen.get_state(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "stateful": [obj.state_dict() for obj in stateful],
            "history": dataclasses.asdict(hist),
            "energy_kwh": hist.energy_kwh[-1] if hist.energy_kwh else math.nan,
            "elapsed_s": hist.elapsed_s[-1] if hist.elapsed_s else 0.0,
        }

    started = time.perf_counter()
    last = epochs if stop_after is None else min(epochs, max(stop_after, 0))
    for epoch in range(first, last + 1):
        model.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        hist.lr.append(opt.param_groups[0]["lr"])
        for x, y in batches(splits.train, batch_size, shuffle=True, augment=ops, generator=gen):
            x = x.to(device, memory_format=memory_format(device), non_blocking=True)
            y = y.to(device, non_blocking=True)
            logits = model(x)
            loss = loss_fn(logits, x, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}; lower lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        hist.train_time_s += time.perf_counter() - t0
        hist.train_samples += seen
        hist.train_loss.append(loss_sum / seen)
        hist.train_accuracy.append(correct / seen)
        hist.val_accuracy.append(accuracy(model, splits.val, device=device))
        hist.eval_samples += len(splits.val)
        hist.elapsed_s.append(elapsed_before + time.perf_counter() - started)
        if energy is not None:
            hist.energy_kwh.append(energy_before + energy())
        if on_epoch is not None:
            try:
                on_epoch(epoch, hist)
            except Exception:
                # stopped at this boundary (a cancelled task): keep the epoch, so the run resumes after it
                if checkpoint is not None:
                    checkpoint(state(epoch))
                raise
        if checkpoint is not None and (epoch % checkpoint_every == 0 or epoch in (epochs, last)):  # type: ignore[operator]
            checkpoint(state(epoch))
    model.eval()
    return hist


def _resume_problem(state: Mapping[str, Any], config: Mapping[str, Any], model: torch.nn.Module,
                    n_stateful: int) -> str:
    """Why ``state`` cannot resume this run (``""`` when it can): checked before anything changes."""
    if not isinstance(state, Mapping) or state.get("format") != RESUME_FORMAT:
        return f"not a resumable state of format {RESUME_FORMAT}"
    missing = sorted({"epoch", "config", "model", "optimizer", "scheduler", "generator", "rng_cpu", "rng_cuda",
                      "stateful", "history", "energy_kwh", "elapsed_s"} - set(state))
    if missing:
        return f"the state has no {', '.join(missing)}"
    saved = state["config"]
    changed = [k for k in config if not isinstance(saved, Mapping) or saved.get(k) != config[k]]
    if changed:
        k = changed[0]
        was = saved.get(k) if isinstance(saved, Mapping) else None
        return f"it was saved with {k}={was!r}, this run has {k}={config[k]!r}"
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= config["epochs"]:
        return f"its epoch {epoch!r} is not in 1..{config['epochs']}"
    own = model.state_dict()
    theirs = state["model"]
    if not isinstance(theirs, Mapping) or set(theirs) != set(own):
        diff = sorted(set(own) ^ set(theirs)) if isinstance(theirs, Mapping) else ["(not a state dict)"]
        return f"its model has other parameters ({', '.join(diff[:3])}{', ...' if len(diff) > 3 else ''})"
    for name, tensor in own.items():
        other = theirs[name]
        if not isinstance(other, torch.Tensor):
            return f"its model's {name} is not a tensor"
        if other.shape != tensor.shape and not _loads(model, theirs):
            return f"its model's {name} has shape {tuple(other.shape)}, this one {tuple(tensor.shape)}"
    for name in ("generator", "rng_cpu"):
        if not isinstance(state[name], torch.Tensor) or state[name].dtype != torch.uint8:
            return f"its {name} is not an RNG state"
    if not isinstance(state["rng_cuda"], list) or not isinstance(state["energy_kwh"], (int, float)) \
            or not isinstance(state["elapsed_s"], (int, float)):
        return "its CUDA RNG states, energy or elapsed time are malformed"
    if not isinstance(state["stateful"], list) or len(state["stateful"]) != n_stateful:
        return "it holds the state of another loss"
    fields = {f.name for f in dataclasses.fields(History)}
    if not isinstance(state["history"], Mapping) or set(state["history"]) != fields:
        return "its history has other fields"
    return ""


def _loads(model: torch.nn.Module, state: Mapping[str, Any]) -> bool:
    """Whether a copy of ``model`` takes ``state``: quantization observers and fake-quantize
    modules size their scales and ranges on their first batch and resize them on load, so a
    QAT model's saved state differs in shape from a fresh one's and still fits."""
    try:
        copy.deepcopy(model).load_state_dict(state)
    except (RuntimeError, ValueError, KeyError):
        return False
    return True


def _restore(state: Mapping[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer,
             sched: torch.optim.lr_scheduler.LRScheduler, gen: torch.Generator, stateful: Sequence[Stateful]) -> History:
    """Load ``state`` into the run's objects and RNGs; return its history."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["rng_cpu"])
    cuda = state["rng_cuda"]
    # a state saved on another kind of worker (no GPU, or another count) keeps this worker's CUDA streams
    if torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    for obj, own in zip(stateful, state["stateful"]):
        obj.load_state_dict(own)
    saved: dict[str, Any] = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in state["history"].items()}
    return History(**saved)


@torch.no_grad()
def predict(model: torch.nn.Module, split: Split, *, batch_size: int = 512, device: torch.device | str = "cpu") -> torch.Tensor:
    """Logits of ``model`` (eval mode) on every sample of ``split``, in order."""
    was_training = model.training
    model.eval()
    model.to(memory_format=memory_format(device))
    out = [model(x.to(device, memory_format=memory_format(device))).float().cpu()
           for x, _ in batches(split, batch_size, shuffle=False)]
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: torch.nn.Module, split: Split, *, device: torch.device | str = "cpu") -> float:
    return (predict(model, split, device=device).argmax(1) == split.y).float().mean().item()
