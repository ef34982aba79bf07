"""Pictures for people: preview grids and confusion matrices (PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid


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
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if matrix[i, j] > limit else "black")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
