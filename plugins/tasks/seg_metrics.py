"""Segmentation metrics, scored as Kaggle scores Severstal.

Mean Dice is taken over every (image, class) pair: 2|X∩Y| / (|X| + |Y|), and an
empty prediction of an empty mask scores 1 (Kaggle's rule). IoU per class is
over all pixels of the split (|X∩Y| / |X∪Y|; 1 when both are empty), and pixel
accuracy is the fraction of (pixel, class) decisions that are right. The
empty-mask baseline is the mean Dice of predicting nothing at all.
"""

from __future__ import annotations

import torch


class MaskScores:
    """Running sums over batches of binary predictions and masks (N, C, H, W), kept on their device.

    Sums stay tensors on the batches' device, so scoring a batch never waits for it
    (no `.item()`/`.cpu()` per batch): validation on a GPU syncs once, when it reads the result.
    """

    def __init__(self, classes: int, device=None):
        zeros = lambda: torch.zeros(classes, dtype=torch.float64, device=device)  # noqa: E731
        self.dice_sum, self.empty_sum, self.inter, self.union = zeros(), zeros(), zeros(), zeros()
        self.correct = torch.zeros((), dtype=torch.float64, device=device)
        self.pixels = 0
        self.images = 0

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred, target = pred.bool(), target.bool()
        inter = (pred & target).flatten(2).sum(2).double()
        sizes = pred.flatten(2).sum(2).double() + target.flatten(2).sum(2).double()
        self.dice_sum += torch.where(sizes == 0, 1.0, 2 * inter / sizes.clamp_min(1)).sum(0)
        self.empty_sum += (target.flatten(2).sum(2) == 0).double().sum(0)
        self.inter += inter.sum(0)
        self.union += (pred | target).flatten(2).sum(2).double().sum(0)
        self.correct += (pred == target).sum()
        self.pixels += pred.numel()
        self.images += len(pred)

    def mean_dice(self) -> float:
        return float(self.dice_sum.sum() / (max(self.images, 1) * len(self.dice_sum)))

    def dice_per_class(self) -> list[float]:
        return (self.dice_sum / max(self.images, 1)).cpu().tolist()

    def summary(self, class_names) -> dict:
        n = max(self.images, 1)
        self.dice_sum, self.empty_sum, self.inter, self.union = (
            t.cpu() for t in (self.dice_sum, self.empty_sum, self.inter, self.union)
        )
        iou = torch.where(self.union == 0, 1.0, self.inter / self.union.clamp_min(1))
        return {
            "mean_dice": float(self.dice_sum.sum() / (n * len(class_names))),
            "empty_baseline_dice": float(self.empty_sum.sum() / (n * len(class_names))),
            "mean_iou": float(iou.mean()),
            "pixel_accuracy": float(self.correct) / max(self.pixels, 1),
            "images": self.images,
            "per_class": {
                name: {"dice": float(self.dice_sum[c] / n), "iou": float(iou[c]), "empty_masks": int(self.empty_sum[c])}
                for c, name in enumerate(class_names)
            },
        }


def binarize(probs: torch.Tensor, threshold: float, min_area: float) -> torch.Tensor:
    """Probabilities (N, C, H, W) → masks: above `threshold`, and emptied where a mask covers less than
    `min_area` of the image (the usual Severstal post-processing: specks on clean steel cost a whole 1)."""
    masks = probs > threshold
    if min_area > 0:
        small = masks.flatten(2).float().mean(2) < min_area
        masks = masks & ~small[..., None, None]
    return masks


@torch.no_grad()
def validate(model, loader, loss, policy, threshold: float = 0.5, min_area: float = 0.0) -> dict[str, float]:
    """`val_loss` (the stage's loss) and `val_dice` (Kaggle's mean Dice of the binarised masks) on the val split.

    Loss and Dice are summed on the device and read once at the end: a per-batch
    `float(loss)` would make the host wait for every batch (measured in the benchmark).
    """
    model.eval()
    total, seen, scores = None, 0, None
    for images, masks in loader:
        images, masks = policy.to_device(images), policy.to_device(masks)
        with policy.autocast():
            logits = model(images)
            value = loss(logits, masks, inputs=images)
        weighted = value.detach().double() * len(images)
        total = weighted if total is None else total + weighted
        seen += len(images)
        scores = scores or MaskScores(masks.shape[1], masks.device)
        scores.add(binarize(logits.float().sigmoid(), threshold, min_area), masks > 0.5)
    if not seen:
        return {}
    return {"val_loss": float(total) / seen, "val_dice": scores.mean_dice()}
