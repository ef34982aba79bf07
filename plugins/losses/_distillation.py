"""The losses of `distillation`, in torch: imported when one is built.

`graftflow.plugins.losses.distillation` registers them and checks their parameters without torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from graftflow.core import ConfigError, LossContext


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    s, t = student.float(), teacher.float()
    kd = (
        F.kl_div(
            F.log_softmax(s / temperature, 1), F.log_softmax(t / temperature, 1), reduction="batchmean", log_target=True
        )
        * temperature**2
    )
    return alpha * kd + (1 - alpha) * F.cross_entropy(s, target)


class Distillation(nn.Module):
    def __init__(self, teacher: nn.Module, temperature: float, alpha: float):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha

    def train(self, mode: bool = True) -> Distillation:
        super().train(mode)
        self.teacher.eval()  # the teacher always predicts with its running statistics
        return self

    def forward(self, logits: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        return distillation_loss(logits, teacher_logits, target, self.temperature, self.alpha)


def _build(teacher: str, temperature: float, alpha: float, context: LossContext) -> Distillation:
    field = f"{context.field}.teacher"
    model, meta = context.load_model(teacher, field)
    if context.num_classes and meta.get("num_classes") != context.num_classes:
        raise ConfigError(
            f"{field}: the teacher predicts {meta.get('num_classes')} classes, the task has {context.num_classes}"
        )
    names = meta.get("class_names")
    if names and context.class_names and list(names) != list(context.class_names):
        raise ConfigError(
            f"{field}: the teacher's classes {', '.join(names)} are not the task's {', '.join(context.class_names)}"
        )
    for key in ("in_chans", "image_size", "mean", "std"):
        if key in context.inputs and key in meta and meta[key] != context.inputs[key]:
            raise ConfigError(
                f"{field}: the teacher was trained on {key}={meta[key]}, "
                f"this task's images have {key}={context.inputs[key]}"
            )
    return Distillation(model, temperature, alpha)
