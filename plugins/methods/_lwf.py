"""Learning without forgetting (Li & Hoiem 2016): learn new classes, keep the old ones.

With `finetune.head: extend` the fine-tuned model's head is the pretrained head with
the new classes appended (the old rows start as they were). Each step adds to the
loss on the new data the distillation of the old classes' logits from a frozen copy
of the model fine-tuning started from: T² · KL(softmax(teacher/T) ‖ softmax(student/T))
over the old outputs, weighted by `alpha`. `replay: K` mixes K exemplars of each old
class (a fixed, seeded choice from the old classes' training images) into the
training data — rehearsal, as iCaRL-style methods do.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from graftflow.core import FinetuneMethod, MethodContext, MethodSpec, Params, hookimpl


class LwFParams(Params):
    temperature: float = Field(2.0, gt=0, description="Distillation temperature T (Li & Hoiem use 2).")
    alpha: float = Field(1.0, ge=0, description="Weight of the distillation term.")
    replay: int = Field(0, ge=0, description="Exemplars per old class mixed into the training data (0 = none).")


def distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(teacher/T) ‖ softmax(student/T)), averaged over the batch; 0 when they agree."""
    t = temperature
    return (
        nn.functional.kl_div(
            nn.functional.log_softmax(student / t, dim=1),
            nn.functional.log_softmax(teacher / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        * t
        * t
    )


class LwF(FinetuneMethod):
    extends_head = True

    def __init__(self, temperature: float = 2.0, alpha: float = 1.0, replay: int = 0):
        super().__init__()
        self.temperature, self.alpha, self.replay_per_class = temperature, alpha, replay

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        self.old = ctx.old_classes
        self.teacher = ctx.teacher.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "teacher"):
            self.teacher.eval()  # the frozen copy never updates BatchNorm statistics
        return self

    def loss(self, model, criterion, images, labels):
        logits = model(images)
        with torch.no_grad():
            old = self.teacher(images)[:, : self.old]
        return criterion(logits, labels, inputs=images) + self.alpha * distillation(
            logits[:, : self.old], old, self.temperature
        )


@hookimpl
def graft_finetune_methods():
    return [
        MethodSpec(
            name="lwf",
            build=lambda **p: LwF(**p),
            params_model=LwFParams,
            description="learning without forgetting: distil the old classes from the starting model",
        )
    ]
