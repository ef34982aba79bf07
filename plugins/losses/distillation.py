"""Knowledge distillation (Hinton et al. 2015) from a teacher checkpoint.

loss = α · T² · KL(softmax(t / T) ‖ softmax(s / T)) + (1 − α) · CE(s, y)
with s the student's logits, t the frozen teacher's logits on the same input batch and
T the temperature (T² keeps the gradient scale independent of T). The teacher is any
saved model: a run's `finetune/model` folder (model.safetensors + model.json), or a
.safetensors file with its model.json beside it; it is rebuilt through the model-family
registry, so it may be a different family or variant than the student, but it must
predict the same classes from the same images (channels, size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from graftflow.core import ConfigError, LossContext, LossSpec, hookimpl


class DistillationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str = Field(description="The teacher: a saved model folder or .safetensors (local or fsspec URL).")
    temperature: float = Field(4.0, gt=0, description="Softening temperature T of both distributions.")
    alpha: float = Field(
        0.9, ge=0, le=1, description="Weight of the distillation term; 1 − alpha goes to CE on labels."
    )


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


@hookimpl
def graft_losses():
    return [
        LossSpec(
            name="distillation",
            kind="classification",
            factory=_build,
            params_model=DistillationParams,
            uses_context=True,
            uses_inputs=True,
            description="KL to a teacher checkpoint's softened logits (T² scaled) plus α-weighted CE.",
        )
    ]
