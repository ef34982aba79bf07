"""Multi-label metrics: average precision per class and its macro mean (mAP), F1 at per-class thresholds.

A class with no positive image in the split has no AP; it is left out of the mean
and reported as null. Thresholds are tuned on the validation split, per class, to
the value that maximises that class's F1 (ties: the lower threshold).
The label-frequency baseline scores every image of a class with that class's
training frequency: a constant score, whose AP is the class's positive rate.
"""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def outputs(model, loader, policy) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities and multi-hot targets over a loader (CPU numpy)."""
    model.eval()
    probs, targets = [], []
    for images, y in loader:
        with policy.autocast():
            logits = model(policy.to_device(images))
        probs.append(logits.float().sigmoid().cpu())
        targets.append(y)
    return torch.cat(probs).numpy(), torch.cat(targets).numpy()


def per_class_ap(probs: np.ndarray, targets: np.ndarray) -> list[float | None]:
    from sklearn.metrics import average_precision_score

    return [
        float(average_precision_score(targets[:, c], probs[:, c])) if targets[:, c].any() else None
        for c in range(targets.shape[1])
    ]


def mean_ap(probs: np.ndarray, targets: np.ndarray) -> float:
    aps = [a for a in per_class_ap(probs, targets) if a is not None]
    return float(np.mean(aps)) if aps else 0.0


def tune_thresholds(probs: np.ndarray, targets: np.ndarray) -> list[float]:
    """Per class, the threshold among the observed probabilities (and 0.5) with the best F1 on these images."""
    from sklearn.metrics import f1_score

    out = []
    for c in range(targets.shape[1]):
        candidates = sorted({0.5, *np.round(probs[:, c], 6).tolist()})
        scores = [f1_score(targets[:, c], probs[:, c] >= t, zero_division=0) for t in candidates]
        out.append(float(candidates[int(np.argmax(scores))]))
    return out


def f1_at(probs: np.ndarray, targets: np.ndarray, thresholds) -> dict[str, float]:
    from sklearn.metrics import f1_score

    pred = probs >= np.asarray(thresholds)[None]
    return {
        "micro_f1": float(f1_score(targets, pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(targets, pred, average="macro", zero_division=0)),
    }


def validate(model, loader, loss, policy) -> dict[str, float]:
    """`val_loss` (the stage's loss) and `val_map` on the validation split."""
    model.eval()
    total, seen = 0.0, 0
    with torch.no_grad():
        for images, y in loader:
            images, y = policy.to_device(images), policy.to_device(y)
            with policy.autocast():
                total += float(loss(model(images), y, inputs=images)) * len(images)
            seen += len(images)
    if not seen:
        return {}
    probs, targets = outputs(model, loader, policy)
    return {"val_loss": total / seen, "val_map": mean_ap(probs, targets)}
