"""Evaluate: the fine-tuned model on held-out images it has never seen."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from graftflow.core import storage
from graftflow.core.data.dataset import require_classes
from graftflow.core.images import save_confusion_matrix
from graftflow.core.models.saved import read_model
from graftflow.core.stages.base import Artifact, StageContext, StageResult
from graftflow.core.stages.inputs import eval_loader, load_trained
from graftflow.core.stages.transfer_metrics import transfer_metrics
from graftflow.core.training.loop import predict


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str]) -> dict:
    labels = list(range(len(class_names)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    return {
        "accuracy": float((y_true == y_pred).mean()),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "images": int(len(y_true)),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
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
    save_confusion_matrix(
        np.array(metrics["confusion_matrix"]),
        class_names,
        ctx.out / "confusion_matrix.png",
        f"{split}: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}",
    )
    rows = [{"class": name, **{k: round(v, 4) for k, v in m.items()}} for name, m in metrics["per_class"].items()]
    summary = {"metrics": {split: metrics, **transfer_metrics(ctx, model, meta, logits, labels)}}
    probe_artifacts = []
    if ctx.config.evaluate.probe != "none":
        summary["metrics"]["probe"] = probe = probe_backbone(ctx, class_names)
        probe_artifacts.append(
            Artifact(
                "table",
                "probe",
                f"{probe['kind']} probe of the frozen {probe['backbone']} "
                f"backbone: {split} accuracy {probe['accuracy']:.4f}",
                rows=[probe],
            )
        )
    return StageResult(
        outputs={"metrics": "metrics.json", "confusion_matrix": "confusion_matrix.png"},
        summary=summary,
        artifacts=[
            *probe_artifacts,
            Artifact(
                "table",
                "evaluation",
                f"{split} split: accuracy {metrics['accuracy']:.4f}, "
                f"macro-F1 {metrics['macro_f1']:.4f} on {metrics['images']} images",
                rows=rows,
            ),
            Artifact(
                "image", "confusion-matrix", f"confusion matrix on the {split} split", path="confusion_matrix.png"
            ),
        ],
    )


def probe_backbone(ctx: StageContext, class_names: list[str]) -> dict:
    """Linear or kNN probe of a frozen backbone: the pretrain stage's when this run has one, else the fine-tuned model.

    Features are the family's pooled features (its head reset to 0 outputs); the probe is fitted
    on the fine-tuning task's train images (`finetune.labels_per_class` of them per class, when set)
    and scored on `evaluate.split`.
    """
    cfg = ctx.config
    pretrained = ctx.run.summary().get("stages", {}).get("pretrain", {}).get("status") == "completed"
    stage, name = ("pretrain", "backbone") if pretrained else ("finetune", "model")
    model, meta = read_model(ctx.host, str(ctx.input(stage, name)), "evaluate.probe")
    ctx.host.families.get(meta["family"], "model.family").reset_head(model, 0)
    model = ctx.policy.prepare(model)
    bs = cfg.data.batch_size * 2
    train_loader, train_sel = eval_loader(ctx, "train", class_names, bs, cfg.finetune.labels_per_class)
    test_loader, test_sel = eval_loader(ctx, cfg.evaluate.split, class_names, bs)
    require_classes(train_sel, "train", "evaluate.probe", minimum=2)
    x_train, y_train = (t.numpy() for t in predict(model, train_loader, ctx.policy))
    x_test, y_test = (t.numpy() for t in predict(model, test_loader, ctx.policy))
    if cfg.evaluate.probe == "knn":
        k = min(cfg.evaluate.probe_k, len(y_train))
        clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance", algorithm="brute")
        extra = {"k": k}
    else:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        extra = {}
    clf.fit(x_train.reshape(len(x_train), -1), y_train)
    y_pred = clf.predict(x_test.reshape(len(x_test), -1))
    return {
        "kind": cfg.evaluate.probe,
        **extra,
        "backbone": stage,
        "features": int(np.prod(x_train.shape[1:])),
        "train_images": int(len(y_train)),
        "images": int(len(y_test)),
        "accuracy": float((y_pred == y_test).mean()),
    }
