"""SimCLR (Chen et al. 2020): two augmented views per image, an MLP projection head, InfoNCE.

No labels are used: the backbone (the configured family with no classifier) learns to map
two views of one image close together and away from every other image of the batch.
The objective is `pretrain.loss` (default `infonce`, i.e. NT-Xent: 2N − 2 negatives per
anchor, temperature `pretrain.loss.temperature`). Works for every family.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from graftflow.core import PretextContext, PretextTask, hookimpl
from graftflow.plugins.pretext._views import ViewParams, Views, feature_backbone, projection_head


class SimCLRParams(ViewParams):
    proj_dim: int = Field(64, gt=0, description="Size of the projected embedding the loss compares.")
    hidden_dim: int | None = Field(None, gt=0, description="Hidden width of the projector (default: feature size).")


class SimCLR(nn.Module):
    def __init__(self, ctx: PretextContext, proj_dim: int = 64, hidden_dim: int | None = None, **views):
        super().__init__()
        self.backbone, dim = feature_backbone(ctx)
        self.projector = projection_head(dim, hidden_dim or dim, proj_dim)
        self.views = Views(ctx.image_size, **views)
        self.loss = ctx.make_loss()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone(images).flatten(1))

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z1, z2 = self.embed(torch.cat([self.views(images), self.views(images)])).chunk(2)
        return self.loss(z1, z2)


@hookimpl
def graft_pretext_tasks():
    return [
        PretextTask(
            name="simclr",
            build=lambda ctx, **params: SimCLR(ctx, **params),
            needs_labels=False,
            params_model=SimCLRParams,
            loss_kind="pretext",
            default_loss="infonce",
            description="contrastive: two augmented views, projection head, InfoNCE (no labels)",
        )
    ]
