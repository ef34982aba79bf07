"""What evaluate adds for the transfer methods: the target domain, and old vs new classes.

- A run with a target domain (`finetune.method.target`): the prediction entropy on the
  target's test images always (it needs no labels), and accuracy and macro-F1 there when
  the target store does hold the model's classes — labels read here, at evaluation,
  never in training.
- A run with `finetune.head: extend`: accuracy on the old classes, the new ones and all of
  them, the old classes' accuracy of the model fine-tuning started from, and the
  forgetting (that accuracy before minus after).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from graftflow.core.data.store import read_info
from graftflow.core.models.saved import read_model
from graftflow.core.stages.base import StageContext
from graftflow.core.stages.inputs import dataset_url, eval_loader
from graftflow.core.training.evaluation import mean_entropy
from graftflow.core.training.loop import predict


def transfer_metrics(
    ctx: StageContext, model: nn.Module, meta: dict, logits: torch.Tensor, labels: torch.Tensor
) -> dict[str, Any]:
    """Extra `metrics.*` entries for this run, given the model's `logits` on the evaluated split."""
    out: dict[str, Any] = {}
    outputs = ctx.run.summary().get("stages", {}).get("acquire", {}).get("outputs", {})
    if "target_dataset" in outputs:
        out["target"] = target_metrics(ctx, model, meta)
    if ctx.config.finetune.head == "extend":
        old = ctx.run.summary().get("finetune", {}).get("head", {}).get("old_classes", [])
        out["incremental"] = incremental_metrics(ctx, logits, labels, len(old))
    return out


def target_metrics(ctx: StageContext, model: nn.Module, meta: dict) -> dict[str, Any]:
    from graftflow.core.stages.evaluate import classification_metrics

    split, batch = ctx.config.evaluate.split, ctx.config.data.batch_size * 2
    names = meta["class_names"]
    unlabelled, _ = eval_loader(ctx, split, None, batch, store="target_dataset")
    result: dict[str, Any] = {"entropy": mean_entropy(model, unlabelled, ctx.policy), "split": split}
    if set(names) <= set(read_info(dataset_url(ctx, "target_dataset")).class_names):
        loader, _ = eval_loader(ctx, split, names, batch, store="target_dataset")
        logits, labels = predict(model, loader, ctx.policy)
        scored = classification_metrics(labels.numpy(), logits.argmax(1).numpy(), names)
        result.update({k: scored[k] for k in ("accuracy", "macro_f1", "images")})
    return result


def incremental_metrics(ctx: StageContext, logits: torch.Tensor, labels: torch.Tensor, n_old: int) -> dict[str, Any]:
    """Accuracy over all old + new classes (argmax of the whole head), split by old and new, and forgetting."""
    predicted = logits.argmax(1)
    old_rows, new_rows = labels < n_old, labels >= n_old

    def accuracy(rows: torch.Tensor) -> float | None:
        return float((predicted[rows] == labels[rows]).float().mean()) if rows.any() else None

    before = accuracy_before(ctx, ctx.config.evaluate.split)
    after = accuracy(old_rows)
    return {
        "accuracy_old": after,
        "accuracy_new": accuracy(new_rows),
        "accuracy_all": accuracy(labels >= 0),
        "accuracy_old_before": before,
        "forgetting": None if before is None or after is None else before - after,
        "old_classes": n_old,
    }


def accuracy_before(ctx: StageContext, split: str) -> float | None:
    """The old classes' accuracy of the pretrained model (its own head) on the same split."""
    backbone, meta = read_model(ctx.host, str(ctx.input("pretrain", "backbone")), "evaluate")
    loader, sel = eval_loader(ctx, split, meta["class_names"], ctx.config.data.batch_size * 2)
    if not len(sel):
        return None
    logits, labels = predict(ctx.policy.prepare(backbone), loader, ctx.policy)
    return float((logits.argmax(1) == labels).float().mean())
