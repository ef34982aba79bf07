"""The `supervised` pretext module, in torch: imported when it is built.

`graftflow.plugins.pretext.supervised` registers it and checks its parameters without torch.
"""

from __future__ import annotations

from torch import nn

from graftflow.core import PretextContext


class SupervisedPretext(nn.Module):
    def __init__(self, ctx: PretextContext):
        super().__init__()
        self.backbone = ctx.family.build(
            ctx.variant,
            num_classes=ctx.num_classes,
            in_chans=ctx.in_chans,
            image_size=ctx.image_size,
            **dict(ctx.model_params),
        )
        self.loss = ctx.make_loss()

    def step(self, images, labels):
        return self.loss(self.backbone(images), labels, inputs=images)
