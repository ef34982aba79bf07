"""The `simmim` pretext module, in torch: imported when it is built.

`graftflow.plugins.pretext.simmim` registers it and checks its parameters without torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from graftflow.core import ConfigError, PluginError, PretextContext
from graftflow.plugins.pretext.simmim import CAPABILITY, TOKEN_INTERFACE


class SimMIM(nn.Module):
    def __init__(self, ctx: PretextContext, mask_ratio: float = 0.6, mask_patch: int | None = None):
        super().__init__()
        size, chans = ctx.image_size, ctx.in_chans
        self.backbone = ctx.family.build(
            ctx.variant, num_classes=0, in_chans=chans, image_size=size, **dict(ctx.model_params)
        )
        self.tokens = CAPABILITY in ctx.family.variant_capabilities(ctx.variant)
        self.mask_ratio, self.size, self.chans = mask_ratio, size, chans
        if self.tokens:
            missing = [a for a in TOKEN_INTERFACE if not hasattr(self.backbone, a)]
            if missing:
                raise PluginError(
                    f"model family '{ctx.family.name}' declares '{CAPABILITY}' but its models lack "
                    f"{', '.join(missing)} (timm VisionTransformer's token interface)"
                )
            self.patch = int(_pair(self.backbone.patch_embed.patch_size))
            dim = self.backbone.embed_dim
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.trunc_normal_(self.mask_token, std=0.02)
            self.decoder = nn.Sequential(nn.Conv2d(dim, self.patch**2 * chans, 1), nn.PixelShuffle(self.patch))
            self.mask_patch = mask_patch or self.patch
            if self.mask_patch % self.patch:
                raise ConfigError(
                    f"pretrain.pretext.mask_patch: must be a multiple of the ViT patch size "
                    f"{self.patch}, got {self.mask_patch}"
                )
        else:
            self.backbone.eval()
            with torch.no_grad():
                fmap = self.backbone.forward_features(torch.zeros(2, chans, size, size))
            self.backbone.train()
            if fmap.ndim != 4:
                raise ConfigError(
                    f"pretrain.pretext: simmim masks conv families in input space and decodes their feature map, "
                    f"but model family '{ctx.family.name}' gives features of shape {tuple(fmap.shape[1:])} and "
                    f"lacks the '{CAPABILITY}' capability"
                )
            scale = math.ceil(size / fmap.shape[-1])
            self.mask_token = nn.Parameter(torch.zeros(1, chans, 1, 1))
            self.decoder = nn.Sequential(nn.Conv2d(fmap.shape[1], scale**2 * chans, 1), nn.PixelShuffle(scale))
            self.mask_patch = mask_patch or max(1, size // 4)
        if size % self.mask_patch:
            raise ConfigError(f"pretrain.pretext.mask_patch: {self.mask_patch} px patches do not tile {size} px images")
        self.grid = size // self.mask_patch
        if self.grid**2 < 2:
            raise ConfigError(
                f"pretrain.pretext.mask_patch: {self.mask_patch} px leaves a single patch of a "
                f"{size} px image; nothing would stay visible"
            )

    def no_weight_decay(self) -> set[str]:
        return {"mask_token"}

    def random_mask(self, batch: int, device: torch.device) -> torch.Tensor:
        """(B, grid, grid) of 0/1: exactly round(ratio · patches) masked patches per image (at least 1, not all)."""
        n = self.grid**2
        k = min(max(round(self.mask_ratio * n), 1), n - 1)
        order = torch.rand(batch, n, device=device).argsort(dim=1)
        mask = torch.zeros(batch, n, device=device)
        mask.scatter_(1, order[:, :k], 1.0)
        return mask.view(batch, self.grid, self.grid)

    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted pixels (B, C, H, W) from `images` with the patches of `mask` hidden."""
        b = len(images)
        if self.tokens:
            vit = self.backbone
            per = self.mask_patch // self.patch
            w = mask.repeat_interleave(per, 1).repeat_interleave(per, 2).flatten(1)[..., None]
            x = vit.patch_embed(images)
            if x.ndim == 4:  # NHWC (dynamic image size)
                x = x.flatten(1, 2)
            x = x * (1 - w) + self.mask_token.to(x.dtype) * w
            x = vit.norm(vit.blocks(vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))))
            x = x[:, vit.num_prefix_tokens :]
            side = self.size // self.patch
            pred = self.decoder(x.transpose(1, 2).reshape(b, -1, side, side))
        else:
            pix = self._pixels(mask)
            pred = self.decoder(self.backbone.forward_features(images * (1 - pix) + self.mask_token * pix))
        if pred.shape[-1] != self.size:
            pred = F.interpolate(pred, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return pred

    def _pixels(self, mask: torch.Tensor) -> torch.Tensor:
        return mask.repeat_interleave(self.mask_patch, 1).repeat_interleave(self.mask_patch, 2)[:, None]

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        mask = self.random_mask(len(images), images.device)
        pred = self.reconstruct(images, mask)
        pix = self._pixels(mask).to(pred.dtype)
        l1 = (pred.float() - images.float()).abs() * pix
        return l1.sum() / (pix.sum() * images.shape[1]).clamp(min=1)


def _pair(value) -> int:
    if isinstance(value, (tuple, list)):
        if value[0] != value[1]:
            raise PluginError(f"simmim needs square patches, got {tuple(value)}")
        return value[0]
    return value
