"""Pictures for people: preview grids and confusion matrices (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

MASK_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 128, 255), (255, 200, 0), (255, 0, 255), (0, 255, 255))


def overlay_masks(image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """uint8 (C, H, W) image with every class's mask (classes, H, W) blended in its colour → uint8 (3, H, W)."""
    rgb = (image if image.shape[0] == 3 else image.expand(3, -1, -1)).float()
    for c in range(masks.shape[0]):
        colour = torch.tensor(MASK_COLOURS[c % len(MASK_COLOURS)], dtype=torch.float32)[:, None, None]
        on = masks[c].bool()[None].expand(3, -1, -1)
        rgb = torch.where(on, 0.45 * rgb + 0.55 * colour, rgb)
    return rgb.round().clamp(0, 255).to(torch.uint8)


def save_grid(images: Sequence[torch.Tensor], path: Path, nrow: int, upscale_to: int = 64) -> Path:
    """uint8 (C,H,W) images → one PNG grid; tiny images are enlarged so a person can see them."""
    batch = torch.stack([img if img.shape[0] == 3 else img.expand(3, -1, -1) for img in images])
    size = batch.shape[-1]
    if size < upscale_to:
        factor = max(upscale_to // size, 1)
        batch = batch.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)
    grid = make_grid(batch, nrow=nrow, padding=2, pad_value=255)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
    return path


def save_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * n, 1 + 0.5 * n), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45 if n > 8 else 0)
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    limit = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if matrix[i, j] > limit else "black",
            )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_training_curves(epochs: Sequence[dict], path: Path, title: str) -> Path:
    """Loss (left) and accuracy (right) per epoch from a stage's history rows; phases are marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [row["epoch"] for row in epochs]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    for key, ax in (
        ("train_loss", loss_ax),
        ("val_loss", loss_ax),
        ("train_accuracy", acc_ax),
        ("val_accuracy", acc_ax),
    ):
        points = [(x, row[key]) for x, row in zip(xs, epochs, strict=False) if isinstance(row.get(key), (int, float))]
        if points:
            ax.plot(*zip(*points, strict=False), marker="o", label=key)
    for ax, label in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    phases = [row.get("phase") for row in epochs]
    for i in range(1, len(phases)):
        if phases[i] != phases[i - 1]:  # e.g. head-only → all layers
            for ax in (loss_ax, acc_ax):
                ax.axvline(xs[i] - 0.5, color="grey", linestyle="--", linewidth=1)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def save_top_losses(
    images: Sequence[torch.Tensor], titles: Sequence[str], path: Path, title: str, upscale_to: int = 64
) -> Path:
    """fastai's `plot_top_losses`: each image (uint8 C,H,W) with its `predicted/actual/loss/probability` line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(n, 3) or 1
    rows = max(1, -(-n // cols))
    size = max(2.4, upscale_to / 32)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size + 0.4), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, text in zip(axes.flat, images, titles, strict=False):
        pixels = image.permute(1, 2, 0).numpy()
        ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=255)
        ax.set_title(text, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
