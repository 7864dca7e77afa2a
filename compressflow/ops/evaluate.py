"""``evaluate``: the STKD Table-5 metrics of a trained model on the test (or val) split."""

from __future__ import annotations

from typing import Literal

from compressflow.ops import Artifact, OpContext, Record, load_checkpoint, model_costs, with_units
from compressflow.registries import OPS

__all__ = ["evaluate"]


@OPS.register
def evaluate(ctx: OpContext, *, model: Artifact, split: Literal["test", "val"] = "test") -> Record:
    """Evaluate a checkpoint: accuracy, macro precision / recall / specificity / F1, Cohen's
    kappa, prevalence and the confusion matrix (STKD Table 5), plus params and MACs.

    Parameters
    ----------
    model : Artifact
        Upstream checkpoint (``needs: {model: <stage>}``).
    split : {"test", "val"}
        Which split to score.
    """
    from compressflow.metrics.classification import classification_metrics
    from compressflow.nn.training import accuracy, predict

    splits = ctx.splits()
    net = load_checkpoint(model, ctx.device)
    part = getattr(splits, split)
    pred = predict(net, part, device=ctx.device).argmax(1)
    metrics = classification_metrics(part.y.numpy(), pred.numpy(), splits.num_classes)
    if split == "test":
        metrics["val_accuracy"] = accuracy(net, splits.val, device=ctx.device)
    scored = len(part) + (len(splits.val) if split == "test" else 0)
    for name, value in model_costs(net, splits, extra_eval=scored).items():
        metrics[name] = value
    metrics.attrs["split"] = split
    return Record(with_units(metrics))
