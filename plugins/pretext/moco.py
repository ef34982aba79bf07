"""MoCo v2 (He et al. 2020; Chen et al. 2020): a momentum key encoder and a queue of negatives.

The query encoder (backbone + projector) is trained; the key encoder is its exponential
moving average and is never handed to the optimizer (`requires_grad=False`). The EMA
update runs at the start of every `step`, i.e. after the previous optimizer step, so
the pretext needs nothing beyond the `step(images, labels)` contract. Keys of the last
`queue` images serve as negatives (`infonce` with `negatives=`). On one device the keys
are encoded in shuffled sub-batches, MoCo's "shuffling BN", so that BatchNorm statistics
cannot leak which key belongs to which query.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from graftflow.core import PretextContext, PretextTask, hookimpl
from graftflow.plugins.pretext._views import ViewParams, Views, feature_backbone, projection_head


class MoCoParams(ViewParams):
    proj_dim: int = Field(64, gt=0, description="Size of the projected embedding.")
    hidden_dim: int | None = Field(None, gt=0, description="Hidden width of the projector (default: feature size).")
    momentum: float = Field(0.99, ge=0, lt=1, description="EMA factor of the key encoder.")
    queue: int = Field(1024, gt=0, description="Number of negative keys kept from earlier batches.")
    shuffle_groups: int = Field(4, gt=0, description="Sub-batches the keys are encoded in (shuffling BN).")


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


@hookimpl
def graft_pretext_tasks():
    return [
        PretextTask(
            name="moco",
            build=lambda ctx, **params: MoCo(ctx, **params),
            needs_labels=False,
            params_model=MoCoParams,
            loss_kind="pretext",
            default_loss="infonce",
            description="contrastive with a momentum key encoder and a queue of negatives (no labels)",
        )
    ]
