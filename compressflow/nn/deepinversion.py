"""DeepInversion (Yin et al. 2020, "Dreaming to Distill"): images optimised from noise until a
frozen teacher's BatchNorm running statistics are matched, for data-free distillation.

Each batch of images ``x`` (in the data's normalised space) starts as standard normal noise and
is optimised with Adam to minimise

    ce · CE(teacher(x̃), targets) + r_feature · R_bn(x̃) + tv_l1 · TV₁(x̃) + tv_l2 · TV₂(x̃)
    + l2 · mean ‖x̃_i‖₂ [+ competition · (1 − JS(teacher(x̃), student(x̃)))]

where ``x̃`` is ``x`` rolled by a random jitter (and randomly flipped), ``R_bn`` is the sum over
every ``BatchNorm2d`` of ``‖μ_batch − running_mean‖₂ + ‖σ²_batch − running_var‖₂`` of the
features entering it (the first BN layer's term weighted ``first_bn``), ``TV₁``/``TV₂`` are the
official code's total-variation priors over the four neighbour differences, and the last term
is Adaptive DeepInversion's competition with a student. After every step the pixels are clipped
to the data's valid range. Pure torch: the op (:mod:`compressflow.ops.synthesize`) adds the
pipeline's data, progress and storage.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BNStatistics", "InversionWeights", "SyntheticSet", "bn_distance", "bn_statistics_loss",
           "competition_loss", "deep_inversion", "image_l2", "total_variation"]

Tensor = torch.Tensor
#: ``on_step(batch, step, losses)``, called every ``report_every`` steps of every batch (and after its last)
StepCallback = Callable[[int, int, dict[str, float]], None]


def bn_statistics_loss(x: Tensor, running_mean: Tensor, running_var: Tensor) -> Tensor:
    """``‖mean(x) − running_mean‖₂ + ‖var(x) − running_var‖₂`` over channels, the batch
    statistics of ``x`` (N, C, H, W) taken over N, H and W (the variance biased, as BN's own)."""
    var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    return torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var)


class BNStatistics:
    """Forward hooks on every ``BatchNorm2d`` of ``net`` that keep, for the last forward pass,
    each layer's :func:`bn_statistics_loss` of its input against its running statistics.

    Use as a context manager (the hooks are removed on exit).

    Raises
    ------
    ValueError
        ``net`` has no ``BatchNorm2d`` layer (or one without running statistics).
    """

    def __init__(self, net: nn.Module) -> None:
        self.layers = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.layers or any(m.running_mean is None or m.running_var is None for m in self.layers):
            raise ValueError("the network has no BatchNorm2d layer with running statistics to match")
        self.terms: list[Tensor] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> BNStatistics:
        for index, module in enumerate(self.layers):
            self._handles.append(module.register_forward_hook(self._hook(index)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, index: int) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            if index == 0:
                self.terms = []  # a new forward pass
            assert isinstance(module, nn.BatchNorm2d) and module.running_mean is not None
            assert module.running_var is not None
            self.terms.append(bn_statistics_loss(inputs[0].float(), module.running_mean, module.running_var))

        return hook

    def loss(self, first_bn: float = 1.0) -> Tensor:
        """The sum of the last forward's terms, the first layer's weighted ``first_bn``."""
        if len(self.terms) != len(self.layers):
            raise RuntimeError(f"{len(self.terms)} of {len(self.layers)} BatchNorm2d layers ran in the last forward")
        return first_bn * self.terms[0] + sum(self.terms[1:], torch.zeros((), device=self.terms[0].device))


@torch.no_grad()
def bn_distance(net: nn.Module, x: Tensor, batch_size: int = 256) -> float:
    """The BN-statistic distance of ``x`` to ``net``'s running statistics (eval mode): the sum
    over BN layers of :func:`bn_statistics_loss`, per batch of ``batch_size``, averaged over
    batches weighted by their size (a batch statistic: smaller batches are noisier)."""
    was_training = net.training
    net.eval()
    total, seen = 0.0, 0
    try:
        with BNStatistics(net) as stats:
            for start in range(0, len(x), batch_size):
                part = x[start:start + batch_size]
                net(part)
                total += float(stats.loss()) * len(part)
                seen += len(part)
    finally:
        net.train(was_training)
    return total / max(seen, 1)


def total_variation(x: Tensor) -> tuple[Tensor, Tensor]:
    """The official code's ``(TV₁, TV₂)`` of ``x`` (N, C, H, W) over four neighbour differences
    (right, down, and both diagonals): ``TV₁`` sums the four mean absolute differences,
    ``TV₂`` the four differences' Frobenius norms (over the whole batch)."""
    diffs = (x[:, :, :, :-1] - x[:, :, :, 1:], x[:, :, :-1, :] - x[:, :, 1:, :],
             x[:, :, 1:, :-1] - x[:, :, :-1, 1:], x[:, :, :-1, :-1] - x[:, :, 1:, 1:])
    l1 = sum((d.abs().mean() for d in diffs), torch.zeros((), device=x.device))
    l2 = sum((torch.linalg.vector_norm(d) for d in diffs), torch.zeros((), device=x.device))
    return l1, l2


def image_l2(x: Tensor) -> Tensor:
    """The mean over images of each image's ℓ2 norm."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1).mean()


def competition_loss(teacher_logits: Tensor, student_logits: Tensor, tau: float = 3.0) -> Tensor:
    """Adaptive DeepInversion's ``1 − JS(p_t, p_s)`` (clamped to [0, 1]) of the τ-softened outputs,
    probabilities clamped to [0.01, 0.99] as the official code does: small when teacher and
    student disagree, so minimising it steers images to where the student is still wrong."""
    p = F.softmax(student_logits / tau, dim=1)
    q = F.softmax(teacher_logits / tau, dim=1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    js = 0.5 * F.kl_div(p.log(), m, reduction="batchmean") + 0.5 * F.kl_div(q.log(), m, reduction="batchmean")
    return 1.0 - js.clamp(0.0, 1.0)


@dataclass(frozen=True)
class InversionWeights:
    """The weights of the loss terms (module docstring) and the first BN layer's multiplier."""

    ce: float = 1.0
    r_feature: float = 1.0
    first_bn: float = 1.0
    tv_l1: float = 0.0
    tv_l2: float = 1e-4
    l2: float = 1e-5
    competition: float = 0.0


@dataclass
class SyntheticSet:
    """What :func:`deep_inversion` returns: ``images`` (N, C, H, W) float32 on the CPU, their
    target ``labels`` (N,) int64, the last step's loss terms (averaged over batches, weighted by
    size), the BN-statistic distance of the initial noise and of the final images (per batch,
    averaged the same way), and the teacher's accuracy on the final images (no jitter)."""

    images: Tensor
    labels: Tensor
    losses: dict[str, float] = field(default_factory=dict)
    bn_distance_initial: float = float("nan")
    bn_distance_final: float = float("nan")
    teacher_accuracy: float = float("nan")


def deep_inversion(teacher: nn.Module, labels: Tensor, sample_shape: tuple[int, int, int], *, iterations: int = 200,
                   batch_size: int = 128, lr: float = 0.1, weights: InversionWeights = InversionWeights(),
                   jitter: int = 1, flip: bool = False, bounds: tuple[Tensor, Tensor] | None = None,
                   student: nn.Module | None = None, seed: int = 0, device: torch.device | str = "cpu",
                   report_every: int = 50, on_step: StepCallback | None = None) -> SyntheticSet:
    """Synthesise one image per entry of ``labels`` from ``teacher`` (module docstring).

    Parameters
    ----------
    teacher : nn.Module
        Kept in eval mode and never updated (nor is ``student``).
    labels : Tensor
        (N,) int64 target classes, one image each.
    sample_shape : tuple of int
        ``(C, H, W)`` of one image.
    iterations, batch_size, lr : int, int, float
        Adam steps per batch (β = (0.5, 0.9), the rate decayed to 0 on a cosine, as the
        official ImageNet code), images optimised together (the BN statistics are a batch's).
    weights : InversionWeights
        The loss terms' weights; ``competition`` needs ``student``.
    jitter, flip : int, bool
        Each step rolls the batch by offsets drawn from ``-jitter..jitter`` pixels and, with
        ``flip``, flips it horizontally with probability 0.5.
    bounds : (Tensor, Tensor), optional
        Per-channel lowest and highest valid values (the normalised pixel range [0, 1]); each
        step clips the images to them.
    student : nn.Module, optional
        For the competition term (Adaptive DeepInversion).
    seed : int
        Seeds the noise, the jitter and the flips.
    report_every : int
        Steps between ``on_step`` calls.
    on_step : callable, optional
        ``on_step(batch, step, losses)``: e.g. progress reports and cancellation checks.

    Returns
    -------
    SyntheticSet

    Raises
    ------
    ValueError
        ``teacher`` has no ``BatchNorm2d`` layer, or ``competition`` > 0 without a ``student``.
    """
    if weights.competition > 0 and student is None:
        raise ValueError("the competition term needs a student network")
    nets = [n for n in (teacher, student) if n is not None]
    modes = [n.training for n in nets]
    grads = [[p.requires_grad for p in n.parameters()] for n in nets]
    for n in nets:
        n.eval().requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    lo, hi = (None, None) if bounds is None else (b.view(1, -1, 1, 1).to(device) for b in bounds)
    images, totals = [], dict.fromkeys(("loss", "ce", "r_feature", "tv_l1", "tv_l2", "l2", "competition"), 0.0)
    before = after = 0.0
    try:
        with BNStatistics(teacher) as stats:
            for index, start in enumerate(range(0, len(labels), batch_size)):
                y = labels[start:start + batch_size].to(device)
                x = torch.randn((len(y), *sample_shape), generator=gen).to(device)
                if lo is not None and hi is not None:
                    x = torch.maximum(torch.minimum(x, hi), lo)
                before += _batch_distance(teacher, stats, x) * len(y)
                x.requires_grad_(True)
                opt = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.9), eps=1e-8)
                terms: dict[str, float] = {}
                for step in range(1, iterations + 1):
                    for group in opt.param_groups:
                        group["lr"] = 0.5 * lr * (1 + math.cos(math.pi * (step - 1) / iterations))
                    jx = _jittered(x, rng, jitter, flip)
                    loss, terms = _objective(teacher, student, stats, jx, y, weights)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if lo is not None and hi is not None:
                        with torch.no_grad():
                            x.copy_(torch.maximum(torch.minimum(x, hi), lo))
                    if on_step is not None and (step % report_every == 0 or step == iterations):
                        on_step(index, step, terms)
                for name, value in terms.items():
                    totals[name] += value * len(y)
                final = x.detach()
                after += _batch_distance(teacher, stats, final) * len(y)
                images.append(final.cpu())
    finally:
        for n, mode, flags in zip(nets, modes, grads):
            n.train(mode)
            for p, flag in zip(n.parameters(), flags):
                p.requires_grad_(flag)
    out = torch.cat(images) if images else torch.empty((0, *sample_shape))
    count = max(len(labels), 1)
    with torch.no_grad():
        teacher.eval()
        pred = torch.cat([teacher(out[i:i + batch_size].to(device)).argmax(1).cpu()
                          for i in range(0, len(out), batch_size)]) if len(out) else torch.empty(0, dtype=torch.int64)
        teacher.train(modes[0])
    accuracy = float((pred == labels.cpu()).float().mean()) if len(out) else float("nan")
    return SyntheticSet(out.float(), labels.to(torch.int64).cpu(), {k: v / count for k, v in totals.items()},
                        before / count, after / count, accuracy)


def _jittered(x: Tensor, rng: random.Random, jitter: int, flip: bool) -> Tensor:
    dx, dy = rng.randint(-jitter, jitter), rng.randint(-jitter, jitter)
    out = torch.roll(x, shifts=(dx, dy), dims=(2, 3)) if jitter > 0 else x
    if flip and rng.random() < 0.5:
        out = torch.flip(out, dims=(3,))
    return out


def _objective(teacher: nn.Module, student: nn.Module | None, stats: BNStatistics, x: Tensor, y: Tensor,
               w: InversionWeights) -> tuple[Tensor, dict[str, float]]:
    logits = teacher(x)
    ce = F.cross_entropy(logits, y)
    r_feature = stats.loss(w.first_bn)
    tv_l1, tv_l2 = total_variation(x)
    l2 = image_l2(x)
    loss = w.ce * ce + w.r_feature * r_feature + w.tv_l1 * tv_l1 + w.tv_l2 * tv_l2 + w.l2 * l2
    comp = torch.zeros((), device=x.device)
    if student is not None and w.competition > 0:
        comp = competition_loss(logits, student(x))
        loss = loss + w.competition * comp
    values = {"loss": loss, "ce": ce, "r_feature": r_feature, "tv_l1": tv_l1, "tv_l2": tv_l2, "l2": l2,
              "competition": comp}
    return loss, {k: float(v.detach()) for k, v in values.items()}


@torch.no_grad()
def _batch_distance(teacher: nn.Module, stats: BNStatistics, x: Tensor) -> float:
    teacher(x)
    return float(stats.loss())
