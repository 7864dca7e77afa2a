"""``objective``: a synthetic search target whose validation "accuracy" is a known function of
its parameters and epoch, so a search strategy can be checked against the known optimum.

It trains a real (linear) model with :meth:`~compressflow.ops.OpContext.fit`, so budgets,
checkpoints, resuming, cancelling and energy metering are those of every training op; only the
reported validation curve is replaced by :func:`known_accuracy`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from compressflow.ops import OpContext, Record, Schedule
from compressflow.registries import OPS

__all__ = ["known_accuracy", "objective"]

#: the ``x`` of the optimum and the bonus of the best ``shape``
OPTIMUM_X = 0.7
BEST_SHAPE = "b"


def known_accuracy(x: float, shape: str, epoch: int) -> float:
    """``(0.9 − (x − 0.7)² + 0.05·[shape = "b"]) · (1 − 0.5^(epoch/2))``: rises with epochs
    and keeps the same ranking of configurations at every epoch.

    >>> round(known_accuracy(0.7, "b", 8), 4)
    0.8906
    """
    quality = 0.9 - (x - OPTIMUM_X) ** 2 + (0.05 if shape == BEST_SHAPE else 0.0)
    return quality * (1.0 - 0.5 ** (epoch / 2))


@OPS.register
def objective(
    ctx: OpContext,
    *,
    x: Annotated[float, Field(ge=0, le=1)] = 0.5,
    shape: Literal["a", "b", "c"] = "a",
    schedule: Schedule = Schedule(epochs=8, batch_size=256, lr=0.05, warmup_epochs=0, augment=False),
    seed: int = 0,
) -> Record:
    """Train a linear classifier for ``epochs`` (or the task's budget) and report
    :func:`known_accuracy` as the validation accuracy of every epoch.

    Parameters
    ----------
    x, shape : float, str
        The searched parameters; the optimum is ``x = 0.7``, ``shape = "b"``.
    schedule : Schedule
        ``epochs`` and the rest of the schedule, flat in a spec.
    seed : int
        Seeds the model and batch order.

    Returns
    -------
    Record
        ``val_accuracy`` (the known function at the last epoch trained), ``epochs_trained``,
        ``cost`` (= ``x``, a second objective with a known trade-off) and ``val_accuracy_curve``.
    """
    import torch
    import xarray as xr

    splits = ctx.splits()
    torch.manual_seed(seed)
    features = splits.in_channels * splits.image_size ** 2
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(features, splits.num_classes)).to(ctx.device)

    def known(epoch, hist) -> None:
        hist.val_accuracy[-1] = known_accuracy(x, shape, epoch)

    hist = ctx.fit(net, schedule, seed=seed, on_epoch=known)
    epochs = len(hist.val_accuracy)
    return Record(xr.Dataset({
        "val_accuracy": xr.DataArray(known_accuracy(x, shape, epochs)),
        "epochs_trained": xr.DataArray(epochs),
        "cost": xr.DataArray(x),
        "val_accuracy_curve": xr.DataArray(hist.val_accuracy, dims="epoch",
                                           coords={"epoch": list(range(1, epochs + 1))}),
    }))
