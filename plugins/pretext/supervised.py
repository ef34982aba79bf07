"""Supervised pretraining: a classifier on the pretraining classes; its body is the backbone."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from torch import nn

from graftflow.core import PretextContext, PretextTask, hookimpl


class SupervisedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


@hookimpl
def graft_pretext_tasks():
    return [
        PretextTask(
            name="supervised",
            build=lambda ctx: SupervisedPretext(ctx),
            needs_labels=True,
            params_model=SupervisedParams,
            description="train a classifier on labelled pretraining classes",
        )
    ]
