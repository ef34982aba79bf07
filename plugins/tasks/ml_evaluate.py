"""The multilabel task's evaluate stage: mAP against the label-frequency baseline on the same images,
per-class AP, and micro/macro F1 at the thresholds saved with the model."""

from __future__ import annotations

import numpy as np


def evaluate(ctx):
    from graftflow.core import Artifact, StageResult, class_counts, eval_loader, load_trained, storage, task_selections
    from graftflow.plugins.tasks.ml_metrics import f1_at, mean_ap, outputs, per_class_ap

    split = ctx.config.evaluate.split
    model, meta = load_trained(ctx)
    model = ctx.policy.prepare(model)
    names = meta["class_names"]
    loader, _ = eval_loader(ctx, split, names, ctx.config.data.batch_size * 2)
    probs, targets = outputs(model, loader, ctx.policy)
    train, _ = task_selections(ctx, "finetune", None)
    frequency = np.asarray(class_counts(train), dtype=np.float64) / max(len(train), 1)
    baseline = np.broadcast_to(frequency, probs.shape)
    thresholds = meta.get("thresholds") or [0.5] * len(names)
    aps = per_class_ap(probs, targets)
    metrics = {
        "map": mean_ap(probs, targets),
        "frequency_baseline_map": mean_ap(baseline, targets),
        **f1_at(probs, targets, thresholds),
        "images": int(len(probs)),
        "thresholds": dict(zip(names, thresholds, strict=True)),
        "per_class": {
            n: {"ap": ap, "positives": int(targets[:, i].sum())}
            for i, (n, ap) in enumerate(zip(names, aps, strict=True))
        },
    }
    storage.write_json(str(ctx.out / "metrics.json"), metrics)
    rows = [{"class": n, **m, "threshold": thresholds[i]} for i, (n, m) in enumerate(metrics["per_class"].items())]
    return StageResult(
        outputs={"metrics": "metrics.json"},
        summary={"metrics": {split: metrics}},
        artifacts=[
            Artifact(
                "table",
                "evaluation",
                f"{split} split: mAP {metrics['map']:.4f} (label-frequency baseline "
                f"{metrics['frequency_baseline_map']:.4f}), micro-F1 {metrics['micro_f1']:.4f}, macro-F1 "
                f"{metrics['macro_f1']:.4f} on {metrics['images']} images",
                rows=rows,
            )
        ],
    )
