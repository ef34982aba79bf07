"""The multilabel task: a set of labels per image (Severstal's defect classes present), sigmoid per class.

Trains on `target: multi` stores with the family's classifier head; the default
loss is BCE-with-logits (also focal-bce, asl). Validation reports `val_map`. When
fine-tuning ends, per-class thresholds are tuned on the validation split and saved
in model.json (`thresholds`); evaluate reports mAP (macro), per-class AP, micro/macro
F1 at those thresholds and the label-frequency baseline's mAP on the same images;
predictions are label sets with every class's probability.
"""

from __future__ import annotations

import csv
from typing import Any

from graftflow.core import Monitor, Params, TaskSpec, hookimpl


class MultilabelParams(Params):
    """Multilabel takes no parameters (its thresholds are tuned on the validation split)."""


def dataset(*args, **kwargs):
    from graftflow.core import MultiHotDataset

    return MultiHotDataset(*args, **kwargs)


def build_model(family, meta, params, **task):
    from graftflow.core import family_classifier

    return family_classifier(family, meta, params)


def layer_groups(family, model):
    return family.layer_groups(model)


def validate(model, loader, loss, policy, **_):
    from graftflow.plugins.tasks.ml_metrics import validate as scores

    return scores(model, loader, loss, policy)


def calibrate(model, loader, policy, meta) -> dict[str, Any]:
    from graftflow.plugins.tasks.ml_metrics import outputs, tune_thresholds

    probs, targets = outputs(model, loader, policy)
    return {"thresholds": tune_thresholds(probs, targets)}


def evaluate(ctx):
    from graftflow.plugins.tasks.ml_evaluate import evaluate as run

    return run(ctx)


def predict(outputs, meta, names, sizes, **_):
    """Per image: its label set at the saved thresholds, and every class's probability."""
    probs = outputs.float().sigmoid().numpy()
    thresholds = meta.get("thresholds") or [0.5] * len(meta["class_names"])
    rows = []
    for name, p in zip(names, probs, strict=True):
        labels = [c for c, v, t in zip(meta["class_names"], p, thresholds, strict=True) if v >= t]
        rows.append(
            {
                "source": name,
                "labels": "|".join(labels),
                **{f"p_{c}": float(v) for c, v in zip(meta["class_names"], p, strict=True)},
            }
        )
    return rows


def write(rows, dest, fmt):
    import fsspec

    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["source", "labels"]
    with fsspec.open(dest, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()} for row in rows)


@hookimpl
def graft_tasks():
    return [
        TaskSpec(
            name="multilabel",
            store_targets=frozenset({"multi"}),
            loss_kind="multilabel",
            default_loss="bce",
            dataset=dataset,
            build_model=build_model,
            layer_groups=layer_groups,
            validate=validate,
            evaluate=evaluate,
            predict=predict,
            write=write,
            formats=("csv",),
            monitors=(Monitor("val_map", "max"),),
            calibrate=calibrate,
            params_model=MultilabelParams,
            description="a label set per image: sigmoid per class, thresholds tuned on val",
        )
    ]
