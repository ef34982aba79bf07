"""Learning without forgetting's torch code: imported when the method is built
(`graftflow.plugins.methods.lwf` registers and checks it without torch).
"""

from __future__ import annotations

import torch
from torch import nn

from graftflow.core import FinetuneMethod, MethodContext


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
