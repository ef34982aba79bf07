"""The `simclr` pretext module, in torch: imported when it is built.

`graftflow.plugins.pretext.simclr` registers it and checks its parameters without torch.
"""

from __future__ import annotations

import torch
from torch import nn

from graftflow.core import PretextContext
from graftflow.plugins.pretext._views import Views, feature_backbone, projection_head


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
