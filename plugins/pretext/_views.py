"""What the self-supervised pretexts share: augmented views of a batch and projection heads.

Views are made on the training device from the normalised float batch the pretrain stage
hands to `step`, with fresh random parameters for every image: a random resized crop
(torchvision's RandomResizedCrop sampling: area and log-aspect uniform), a rotation and an
optional flip, composed into one affine map per image and applied to the whole batch with
one `grid_sample`; then contrast/brightness jitter, Gaussian noise and random erasing
(torchvision's RandomErasing sampling), all vectorised. torchvision.transforms.v2 draws one
set of parameters per call, so per-image views would need a Python loop over the batch:
measured 0.66 ms per image on the CI CPU, twice the cost of the model itself at 8 px.
Borders are replicated, so exposed corners take the image's background.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from graftflow.core import PretextContext
from graftflow.plugins.pretext._view_params import ViewParams  # noqa: F401 (imported from here before)


def _uniform(n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
    return torch.empty(n, device=device).uniform_(lo, hi)


class Views(nn.Module):
    """A random augmented view of every image of a normalised (B, C, H, W) batch."""

    def __init__(
        self,
        image_size: int,
        crop_scale_min: float = 0.4,
        rotation: float = 10.0,
        flip: bool = False,
        jitter: float = 0.4,
        noise: float = 0.1,
        erase: float = 0.25,
    ):
        super().__init__()
        self.image_size, self.crop_scale_min, self.rotation, self.flip = image_size, crop_scale_min, rotation, flip
        self.jitter, self.noise, self.erase = jitter, noise, erase

    def affine(self, n: int, device: torch.device) -> torch.Tensor:
        """(n, 2, 3) maps from output to input coordinates in [-1, 1]: crop, rotate, flip."""
        area = _uniform(n, self.crop_scale_min, 1.0, device)
        log_ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), device)
        w = torch.sqrt(area * log_ratio.exp()).clamp(max=1.0)  # half-extents as fractions of the image
        h = torch.sqrt(area / log_ratio.exp()).clamp(max=1.0)
        cx = _uniform(n, -1.0, 1.0, device) * (1 - w)
        cy = _uniform(n, -1.0, 1.0, device) * (1 - h)
        theta = _uniform(n, -self.rotation, self.rotation, device) * (math.pi / 180)
        sx = w * (torch.where(torch.rand(n, device=device) < 0.5, -1.0, 1.0) if self.flip else 1.0)
        cos, sin = theta.cos(), theta.sin()
        return torch.stack([torch.stack([cos * sx, -sin * h, cx], 1), torch.stack([sin * sx, cos * h, cy], 1)], 1)

    def erasing_mask(self, n: int, size: int, device: torch.device) -> torch.Tensor:
        """(n, 1, size, size) True inside one random rectangle (2–20% of the area) of a `erase` share of images."""
        area = _uniform(n, 0.02, 0.2, device) * size * size
        ratio = _uniform(n, math.log(0.3), math.log(3.3), device).exp()
        eh = torch.sqrt(area * ratio).clamp(1, size)
        ew = torch.sqrt(area / ratio).clamp(1, size)
        top = torch.rand(n, device=device) * (size - eh)
        left = torch.rand(n, device=device) * (size - ew)
        coords = torch.arange(size, device=device, dtype=torch.float32)
        rows = (coords[None] >= top[:, None]) & (coords[None] < (top + eh)[:, None])
        cols = (coords[None] >= left[:, None]) & (coords[None] < (left + ew)[:, None])
        on = torch.rand(n, device=device) < self.erase
        return (rows[:, :, None] & cols[:, None, :] & on[:, None, None])[:, None]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, c = images.shape[:2]
        x = images.float()
        grid = F.affine_grid(self.affine(n, x.device), [n, c, self.image_size, self.image_size], align_corners=False)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.jitter:
            contrast = _uniform(n, 1 - self.jitter, 1 + self.jitter, x.device).view(n, 1, 1, 1)
            brightness = _uniform(n, -self.jitter, self.jitter, x.device).view(n, 1, 1, 1)
            mean = out.mean(dim=(1, 2, 3), keepdim=True)
            out = (out - mean) * contrast + mean + brightness * out.std(dim=(1, 2, 3), keepdim=True)
        if self.noise:
            out = out + self.noise * torch.randn_like(out)
        if self.erase:
            out = out.masked_fill(self.erasing_mask(n, self.image_size, x.device), 0.0)
        return out.to(images.dtype)


def feature_backbone(ctx: PretextContext) -> tuple[nn.Module, int]:
    """A fresh model of the configured family with no classifier, and the size of its pooled features."""
    backbone = ctx.family.build(
        ctx.variant, num_classes=0, in_chans=ctx.in_chans, image_size=ctx.image_size, **dict(ctx.model_params)
    )
    backbone.eval()
    with torch.no_grad():
        dim = backbone(torch.zeros(2, ctx.in_chans, ctx.image_size, ctx.image_size)).flatten(1).shape[1]
    backbone.train()
    return backbone, dim


def projection_head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Module:
    """SimCLR's MLP projector: Linear → BatchNorm → ReLU → Linear."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, out_dim)
    )
