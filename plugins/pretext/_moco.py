"""The `moco` pretext module, in torch: imported when it is built.

`graftflow.plugins.pretext.moco` registers it and checks its parameters without torch.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from graftflow.core import PretextContext
from graftflow.plugins.pretext._views import Views, feature_backbone, projection_head


class MoCo(nn.Module):
    def __init__(
        self,
        ctx: PretextContext,
        proj_dim: int = 64,
        hidden_dim: int | None = None,
        momentum: float = 0.99,
        queue: int = 1024,
        shuffle_groups: int = 4,
        **views,
    ):
        super().__init__()
        self.backbone, dim = feature_backbone(ctx)
        self.projector = projection_head(dim, hidden_dim or dim, proj_dim)
        self.key_backbone = copy.deepcopy(self.backbone).requires_grad_(False)
        self.key_projector = copy.deepcopy(self.projector).requires_grad_(False)
        self.views = Views(ctx.image_size, **views)
        self.loss = ctx.make_loss()
        self.momentum, self.shuffle_groups = momentum, shuffle_groups
        self.register_buffer("queue", F.normalize(torch.randn(queue, proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("synced", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def update_key_encoder(self) -> None:
        """Key ← m·key + (1 − m)·query; the first call copies (weights may have been loaded after build)."""
        m = self.momentum if bool(self.synced) else 0.0
        for online, key in ((self.backbone, self.key_backbone), (self.projector, self.key_projector)):
            for p, k in zip(online.parameters(), key.parameters(), strict=True):
                k.mul_(m).add_(p.detach(), alpha=1 - m)
        self.synced.fill_(True)

    @torch.no_grad()
    def keys(self, images: torch.Tensor) -> torch.Tensor:
        order = torch.randperm(len(images), device=images.device)
        chunks = [
            self.key_projector(self.key_backbone(c).flatten(1))
            for c in images[order].tensor_split(min(self.shuffle_groups, len(images)))
        ]
        out = torch.empty_like(torch.cat(chunks))
        out[order] = torch.cat(chunks)
        return out

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        keys = F.normalize(keys.float(), dim=1)[: len(self.queue)]
        idx = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % len(self.queue)
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % len(self.queue))

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.update_key_encoder()
        q = self.projector(self.backbone(self.views(images)).flatten(1))
        k = self.keys(self.views(images))
        loss = self.loss(q, k, negatives=self.queue.clone())
        self.enqueue(k)
        return loss
