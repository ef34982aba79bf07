"""Evaluate: the fine-tuned model on held-out images it has never seen."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from core import storage
from core.data.dataset import require_classes
from core.images import save_confusion_matrix
from core.stages.base import Artifact, StageContext, StageResult
from core.stages.common import eval_loader, load_trained
from core.training.loop import predict


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float((y_true == y_pred).mean()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "images": int(len(y_true)),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                             "support": int(support[i])} for i, name in enumerate(class_names)},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def run(ctx: StageContext) -> StageResult:
    split = ctx.config.evaluate.split
    model, meta = load_trained(ctx)
    model = ctx.policy.prepare(model)
    class_names = meta["class_names"]
    loader, sel = eval_loader(ctx, split, class_names, ctx.config.data.batch_size * 2)
    require_classes(sel, split, "evaluate.split", minimum=1)
    logits, labels = predict(model, loader, ctx.policy)
    metrics = classification_metrics(labels.numpy(), logits.argmax(1).numpy(), class_names)
    storage.write_json(str(ctx.out / "metrics.json"), metrics)
    save_confusion_matrix(np.array(metrics["confusion_matrix"]), class_names, ctx.out / "confusion_matrix.png",
                          f"{split}: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}")
    rows = [{"class": name, **{k: round(v, 4) for k, v in m.items()}} for name, m in metrics["per_class"].items()]
    return StageResult(
        outputs={"metrics": "metrics.json", "confusion_matrix": "confusion_matrix.png"},
        summary={"metrics": {split: metrics}},
        artifacts=[
            Artifact("table", "evaluation", f"{split} split: accuracy {metrics['accuracy']:.4f}, "
                     f"macro-F1 {metrics['macro_f1']:.4f} on {metrics['images']} images", rows=rows),
            Artifact("image", "confusion-matrix", f"confusion matrix on the {split} split",
                     path="confusion_matrix.png"),
        ],
    )
