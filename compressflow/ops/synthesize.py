"""``synthesize``: a synthetic training set dreamt from a frozen teacher by DeepInversion
(Yin et al. 2020; :mod:`compressflow.nn.deepinversion`), for data-free distillation: a
``distill`` stage with ``needs: {teacher: ..., data: <this stage>}`` trains on it.

The synthesis is its own stage, so its energy (and CO₂) is metered and reported on its own:
the ``synthesize`` stage group's ``energy_kwh``, apart from the students that train on it."""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
from pydantic import Field

from compressflow.errors import InputError, SpecError
from compressflow.ops import Artifact, NonNegative, OpContext, Record, load_checkpoint, zarr_record
from compressflow.registries import OPS

__all__ = ["synthesize"]

#: Adam steps between progress reports (and cancellation checks)
PROGRESS_EVERY = 25


def _check_competition(spec: Any, name: str) -> None:
    """Spec-time: the competition term (Adaptive DeepInversion) and a ``student`` come together."""
    st = spec.stages[name]
    values = st.sweep.get("competition", [st.params.get("competition", 0.0)])
    weighted = any(not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0 for v in values)
    if weighted and "student" not in st.needs:
        raise SpecError(f"stages.{name}.params.competition: a competition weight > 0 (Adaptive DeepInversion) "
                        f"needs a student to compete with; add needs: {{student: <stage>}} or set competition: 0")
    if "student" in st.needs and not weighted:
        raise SpecError(f"stages.{name}.needs.student: a student is used only by the competition term; "
                        f"set competition > 0 (e.g. 0.01) or drop needs.student")


@OPS.register(check=_check_competition)
def synthesize(
    ctx: OpContext,
    *,
    teacher: Artifact,
    student: Artifact | None = None,
    images: Annotated[int, Field(ge=1, le=100_000)] = 512,  # bounded: the set is held in memory
    iterations: Annotated[int, Field(ge=1, le=100_000)] = 200,
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 128,
    lr: Annotated[float, Field(gt=0, le=10)] = 0.2,
    ce: NonNegative = 1.0,
    r_feature: NonNegative = 0.1,
    first_bn: NonNegative = 1.0,
    tv_l1: NonNegative = 0.0,
    tv_l2: NonNegative = 1e-4,
    l2: NonNegative = 1e-5,
    competition: NonNegative = 0.0,
    jitter: Annotated[int, Field(ge=0, le=64)] = 1,
    flip: bool | None = None,
    seed: int = 0,
) -> Record:
    """Synthesise ``images`` training images from ``teacher`` by DeepInversion (Yin et al. 2020).

    Parameters
    ----------
    teacher : Artifact
        Upstream checkpoint (``needs: {teacher: <stage>}``) of a model with ``BatchNorm2d``
        layers, whose running statistics the images are optimised to match; never updated.
    student : Artifact, optional
        A student checkpoint for Adaptive DeepInversion's competition term (``needs:
        {student: <stage>}``, with ``competition`` > 0): images are steered to where teacher and
        student disagree (``1 − JS`` of their τ=3 softmax outputs is minimised).
    images : int
        How many images; the target labels cycle through the classes (balanced), shuffled by ``seed``.
    iterations, batch_size, lr : int, int, float
        Adam steps per batch of ``batch_size`` images optimised together (β = (0.5, 0.9), the
        rate decayed from ``lr`` to 0 on a cosine).
    ce, r_feature, first_bn, tv_l1, tv_l2, l2, competition : float
        Weights of the teacher's cross-entropy toward the targets, of the BN-statistic term
        (``first_bn`` multiplies the first BN layer's), of the ℓ1 and ℓ2 total-variation
        priors, of the images' ℓ2 norm and of the competition term.
    jitter, flip : int, bool
        Each step rolls the batch by up to ``jitter`` pixels and, with ``flip``, flips it
        horizontally half the time; ``flip`` defaults to whether the pipeline's training
        augmentation flips (digits' does not: a mirrored digit is not the same digit).
    seed : int
        Seeds the noise, the labels' order, the jitter and the flips.

    Returns
    -------
    Record
        ``num_images``, ``iterations``, the last step's loss terms (``final_loss``,
        ``final_ce``, ``final_r_feature``, ``final_tv_l1``, ``final_tv_l2``, ``final_l2``,
        ``final_competition``; averaged over batches), the BN-statistic distance
        (:func:`~compressflow.nn.deepinversion.bn_distance`) of the initial noise
        (``bn_distance_initial``), of the final images (``bn_distance_final``) and of as many
        real training images (``bn_distance_real``, for scale), ``teacher_accuracy`` (the
        teacher's on its own synthetic images, against their targets), ``class_count`` (dim
        ``class``) and ``store_bytes``; artifact: the image-set Zarr store
        (:mod:`compressflow.data.synthesized`). The stage's ``energy_kwh`` is the synthesis's own.

    Raises
    ------
    InputError
        A teacher without ``BatchNorm2d`` layers.
    """
    import torch

    from compressflow.data.synthesized import write_image_set
    from compressflow.nn.deepinversion import InversionWeights, bn_distance, deep_inversion

    splits = ctx.splits()
    net = load_checkpoint(teacher, ctx.device)
    rival = load_checkpoint(student, ctx.device) if student is not None else None
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(images) % splits.num_classes)[torch.randperm(images, generator=gen)]
    mean, std = torch.tensor(splits.mean or [0.0]), torch.tensor(splits.std or [1.0])
    bounds = (-mean / std, (1 - mean) / std)  # the pixel range [0, 1] in the normalised space
    weights = InversionWeights(ce=ce, r_feature=r_feature, first_bn=first_bn, tv_l1=tv_l1, tv_l2=tv_l2, l2=l2,
                               competition=competition if rival is not None else 0.0)
    batches = -(-images // batch_size)

    def on_step(batch: int, step: int, losses: dict[str, float]) -> None:
        ctx.progress(batch=batch + 1, of_batches=batches, step=step, of=iterations, loss=losses["loss"],
                     r_feature=losses["r_feature"], ce=losses["ce"])
        if not (batch + 1 == batches and step == iterations):
            ctx.check_cancelled()

    try:
        result = deep_inversion(net, labels, splits.sample_shape, iterations=iterations, batch_size=batch_size, lr=lr,
                                weights=weights, jitter=jitter,
                                flip=("flip" in splits.augment) if flip is None else flip, bounds=bounds,
                                student=rival, seed=seed, device=ctx.device, report_every=PROGRESS_EVERY,
                                on_step=on_step)
    except ValueError as exc:  # no BN layer to match
        raise InputError(f"synthesize.teacher: {teacher.meta.get('model', teacher.path)!r}: {exc}; DeepInversion "
                         f"needs a teacher with BatchNorm2d layers") from None
    real = bn_distance(net, splits.train.x[:images].to(ctx.device), batch_size)
    path = write_image_set(ctx.artifact_path(".zarr"), result.images, result.labels, num_classes=splits.num_classes,
                           attrs={"teacher_sha256": teacher.sha256, "dataset": splits.name, "mean": list(splits.mean),
                                  "std": list(splits.std), "method": "deepinversion"})
    counts = np.bincount(result.labels.numpy(), minlength=splits.num_classes).astype(np.int64)
    record = zarr_record(
        path, {"num_images": images, "num_classes": splits.num_classes, "sample_shape": list(splits.sample_shape)},
        num_images=images, iterations=iterations,
        **{f"final_{name}": value for name, value in result.losses.items()},
        bn_distance_initial=result.bn_distance_initial, bn_distance_final=result.bn_distance_final,
        bn_distance_real=real, teacher_accuracy=result.teacher_accuracy, class_count=("class", counts),
    )
    record.metrics.coords["class"] = list(splits.class_names)
    for name in ("bn_distance_initial", "bn_distance_final", "bn_distance_real"):
        record.metrics[name].attrs["units"] = "sum over BN layers of L2 norms (mean and variance)"
    record.metrics["teacher_accuracy"].attrs["units"] = "1"
    return record
