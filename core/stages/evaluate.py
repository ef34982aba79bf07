"""Evaluate: the fine-tuned model on held-out images it has never seen.

Besides the metrics and the confusion matrix it writes what fastai's
`ClassificationInterpretation` shows: a gallery of the top losses (image,
predicted, actual, loss, probability of the actual class) and the most confused
pairs, and a predictions.csv with every image's prediction (and sha256, so a
`graft predict` of the same images can be compared row by row). With
`evaluate.tta` it also scores the softmax averaged over the TTA views, and records
the metrics with and without.
"""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from graftflow.core import storage
from graftflow.core.data.dataset import ArrowImageDataset, require_classes
from graftflow.core.images import save_confusion_matrix, save_top_losses
from graftflow.core.inference.engines import EagerEngine
from graftflow.core.inference.tta import tta_probabilities
from graftflow.core.models.saved import read_model
from graftflow.core.models.weights import META
from graftflow.core.stages.base import Artifact, StageContext, StageResult
from graftflow.core.stages.inputs import eval_loader, load_trained
from graftflow.core.stages.transfer_metrics import transfer_metrics
from graftflow.core.tasks import task_for_model
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
    """The task's evaluation (`TaskSpec.evaluate`) of the fine-tuned model on `evaluate.split`."""
    meta = storage.read_json(str(ctx.input("finetune", "model") / META))
    return task_for_model(ctx.host, meta).evaluate(ctx)


def evaluate_classification(ctx: StageContext) -> StageResult:
    """A classifier's evaluation: metrics, confusion matrix, top losses, predictions.csv, TTA and probes."""
    cfg = ctx.config.evaluate
    split = cfg.split
    model, meta = load_trained(ctx)
    model = ctx.policy.prepare(model)
    class_names = meta["class_names"]
    loader, sel = eval_loader(ctx, split, class_names, ctx.config.data.batch_size * 2)
    require_classes(sel, split, "evaluate.split", minimum=1)
    logits, labels = predict(model, loader, ctx.policy)
    probs, y_true = logits.float().softmax(1).numpy(), labels.numpy()
    metrics = classification_metrics(y_true, probs.argmax(1), class_names)
    metrics["most_confused"] = most_confused(np.array(metrics["confusion_matrix"]), class_names)
    tta_probs = None
    if cfg.tta:
        engine = EagerEngine(model, ctx.policy)
        tta_probs = torch.cat([tta_probabilities(engine, x, cfg.tta_views).cpu() for x, _ in loader]).numpy()
        tta = classification_metrics(y_true, tta_probs.argmax(1), class_names)
        metrics["tta"] = {"views": list(cfg.tta_views), **{k: tta[k] for k in ("accuracy", "macro_f1", "images")}}
    storage.write_json(str(ctx.out / "metrics.json"), metrics)
    table = prediction_table(sel, probs, y_true, class_names, tta_probs)
    write_csv(ctx.out / "predictions.csv", table)
    losses = top_losses(ctx, sel, table, class_names)
    save_confusion_matrix(
        np.array(metrics["confusion_matrix"]),
        class_names,
        ctx.out / "confusion_matrix.png",
        f"{split}: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}",
    )
    rows = [{"class": name, **{k: round(v, 4) for k, v in m.items()}} for name, m in metrics["per_class"].items()]
    summary = {"metrics": {split: metrics, **transfer_metrics(ctx, model, meta, logits, labels)}}
    interpretation = [
        Artifact("image", "top-losses", f"top losses on the {split} split: {TOP_LOSS_TITLE}", path=losses[0]),
        Artifact(
            "table", "top-losses-table", f"the {len(losses[1])} {split} images with the highest loss", rows=losses[1]
        ),
        Artifact(
            "table",
            "most-confused",
            f"most confused pairs on the {split} split (actual → predicted, count)",
            rows=metrics["most_confused"] or [{"actual": "-", "predicted": "-", "count": 0}],
        ),
    ]
    if cfg.tta:
        t = metrics["tta"]
        interpretation.append(
            Artifact(
                "table",
                "evaluation-tta",
                f"{split} split with test-time augmentation ({', '.join(t['views'])})",
                rows=[
                    {"scoring": "plain", "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]},
                    {"scoring": "tta", "accuracy": t["accuracy"], "macro_f1": t["macro_f1"]},
                ],
            )
        )
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
        outputs={
            "metrics": "metrics.json",
            "confusion_matrix": "confusion_matrix.png",
            "predictions": "predictions.csv",
            "top_losses": losses[0],
        },
        summary=summary,
        artifacts=[
            *probe_artifacts,
            *interpretation,
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


TOP_LOSSES = 9  # images in the top-losses gallery, as fastai's plot_top_losses(9)
MOST_CONFUSED = 20  # pairs kept in metrics.most_confused
TOP_LOSS_TITLE = "predicted / actual / loss / probability of the actual class"


def most_confused(matrix: np.ndarray, class_names: list[str]) -> list[dict]:
    """fastai's `most_confused`: off-diagonal (actual, predicted) pairs by count, most frequent first."""
    pairs = [
        {"actual": class_names[i], "predicted": class_names[j], "count": int(matrix[i, j])}
        for i in range(len(class_names))
        for j in range(len(class_names))
        if i != j and matrix[i, j] > 0
    ]
    return sorted(pairs, key=lambda p: -p["count"])[:MOST_CONFUSED]


def prediction_table(sel, probs: np.ndarray, y_true: np.ndarray, class_names, tta_probs=None) -> list[dict]:
    """One row per evaluated image, in store order: its sha256, label, prediction, probability and loss."""
    rows = []
    p_true = probs[np.arange(len(y_true)), y_true]
    loss = -np.log(np.clip(p_true, 1e-12, None))
    for i in range(len(y_true)):
        pred = int(probs[i].argmax())
        row = {
            "index": i,
            "sha256": hashlib.sha256(sel.images[i].as_buffer()).hexdigest(),
            "label": class_names[y_true[i]],
            "prediction": class_names[pred],
            "probability": float(probs[i, pred]),
            "loss": float(loss[i]),
        }
        if tta_probs is not None:
            tta_pred = int(tta_probs[i].argmax())
            row["prediction_tta"], row["probability_tta"] = class_names[tta_pred], float(tta_probs[i, tta_pred])
        rows.append(row)
    return rows


def write_csv(path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def top_losses(ctx: StageContext, sel, table: list[dict], class_names) -> tuple[str, list[dict]]:
    """The TOP_LOSSES images the model got most wrong, as a PNG gallery and rows (fastai's interpretation)."""
    worst = sorted(table, key=lambda r: -r["loss"])[:TOP_LOSSES]
    data = ctx.config.data
    plain = ArrowImageDataset(sel, data.channels, data.image_size)
    images = [plain.decode(r["index"]) for r in worst]
    titles = [f"{r['prediction']}/{r['label']}/{r['loss']:.2f}/{np.exp(-r['loss']):.2f}" for r in worst]
    save_top_losses(images, titles, ctx.out / "top_losses.png", TOP_LOSS_TITLE)
    rows = [
        {
            "index": r["index"],
            "predicted": r["prediction"],
            "actual": r["label"],
            "loss": round(r["loss"], 4),
            "probability_actual": round(float(np.exp(-r["loss"])), 4),
            "sha256": r["sha256"][:12],
        }
        for r in worst
    ]
    return "top_losses.png", rows


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
