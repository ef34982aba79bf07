"""The segmentation task's evaluate stage: Kaggle's mean Dice against the empty-mask baseline, IoU per
class, pixel accuracy, and a mask-overlay gallery of the held-out images.

The baseline is scored on the same images: predicting no defect anywhere, which on
Severstal-like data (most images clean) is a strong score to beat.
"""

from __future__ import annotations

from pathlib import Path

import torch

OVERLAY = "mask_overlay.png"
GALLERY = 8  # images in the overlay gallery


def save_overlays(pixels, truths, preds, path: Path) -> Path:
    """A grid of pairs: the true masks over the image, then the predicted ones."""
    from graftflow.core import overlay_masks as overlay
    from graftflow.core import save_grid

    tiles = []
    for image, truth, pred in zip(pixels, truths, preds, strict=True):
        tiles += [overlay(image, truth), overlay(image, pred)]
    return save_grid(tiles, path, nrow=2)


def evaluate(ctx, threshold: float = 0.5, min_area: float = 0.0):
    """The evaluate stage of a segmentation model (`TaskSpec.evaluate`)."""
    from graftflow.core import Artifact, StageResult, eval_loader, load_trained, storage
    from graftflow.plugins.tasks.seg_metrics import MaskScores, binarize

    split = ctx.config.evaluate.split
    model, meta = load_trained(ctx)
    model = ctx.policy.prepare(model).eval()
    loader, sel = eval_loader(ctx, split, meta["class_names"], ctx.config.data.batch_size * 2)
    scores = MaskScores(len(meta["class_names"]))
    shown: list[tuple] = []
    with torch.no_grad():
        for images, masks in loader:
            with ctx.policy.autocast():
                logits = model(ctx.policy.to_device(images))
            pred = binarize(logits.float().sigmoid().cpu(), threshold, min_area)
            scores.add(pred, masks > 0.5)
            start = len(shown)
            shown += [(start + i, masks[i], pred[i]) for i in range(min(len(pred), GALLERY - start))]
    metrics = {"threshold": threshold, "min_area": min_area, **scores.summary(meta["class_names"])}
    storage.write_json(str(ctx.out / "metrics.json"), metrics)
    outputs = {"metrics": "metrics.json"}
    artifacts = []
    if shown:
        pixels = [loader.dataset.pixels.decode(i) for i, _, _ in shown]
        save_overlays(pixels, [t for _, t, _ in shown], [p for _, _, p in shown], ctx.out / OVERLAY)
        outputs["gallery"] = OVERLAY
        artifacts.append(
            Artifact("image", "mask-overlay", f"{split}: true masks (left) and predicted (right)", path=OVERLAY)
        )
    rows = [{"class": name, **{k: round(v, 4) for k, v in m.items()}} for name, m in metrics["per_class"].items()]
    artifacts.append(
        Artifact(
            "table",
            "evaluation",
            f"{split} split: mean Dice {metrics['mean_dice']:.4f} (empty-mask baseline "
            f"{metrics['empty_baseline_dice']:.4f}), mean IoU {metrics['mean_iou']:.4f}, pixel accuracy "
            f"{metrics['pixel_accuracy']:.4f} on {metrics['images']} images",
            rows=rows,
        )
    )
    return StageResult(outputs=outputs, summary={"metrics": {split: metrics}}, artifacts=artifacts)
