"""Test-time augmentation: the softmax averaged over fixed views of each image.

The views are deterministic (no randomness, so a TTA prediction is the same every
time): `original`, `hflip`, `vflip` and `zoom:F` (the centre crop of fraction F,
resized back to the model's input size), joined with `+` (`hflip+zoom:0.9`). They
act on the normalised batch, after the model's own preprocessing, so eager, ONNX and
TorchScript engines see the same tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from graftflow.core.config import parse_tta_view


def view(images: torch.Tensor, spec: str) -> torch.Tensor:
    """One TTA view of a normalised (N, C, H, W) batch."""
    out = images
    for op, arg in parse_tta_view(spec):
        if op == "hflip":
            out = out.flip(-1)
        elif op == "vflip":
            out = out.flip(-2)
        elif op == "zoom" and arg is not None and arg < 1:
            out = _zoom(out, arg)
    return out


def _zoom(images: torch.Tensor, fraction: float) -> torch.Tensor:
    h, w = images.shape[-2:]
    ch, cw = max(1, round(h * fraction)), max(1, round(w * fraction))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = images[..., top : top + ch, left : left + cw]
    return F.interpolate(crop.float(), size=(h, w), mode="bilinear", align_corners=False).to(images.dtype)


def tta_probabilities(
    logits_of: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, views: Sequence[str]
) -> torch.Tensor:
    """Softmax of `logits_of(view)` averaged over `views` (float32, on the logits' device)."""
    total = None
    for spec in views:
        probs = logits_of(view(images, spec)).float().softmax(1)
        total = probs if total is None else total + probs
    return total / len(views)
