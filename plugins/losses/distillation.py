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

from pydantic import BaseModel, ConfigDict, Field

from graftflow.core import LossSpec, deferred, forward_to, hookimpl

# The losses' torch code lives in _distillation.py, imported when one is built: registering and
# checking a config imports no torch.
_IMPL = "graftflow.plugins.losses._distillation"
__getattr__ = forward_to(_IMPL, ("Distillation", "_build", "distillation_loss"))


class DistillationParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    teacher: str = Field(description="The teacher: a saved model folder or .safetensors (local or fsspec URL).")
    temperature: float = Field(4.0, gt=0, description="Softening temperature T of both distributions.")
    alpha: float = Field(
        0.9, ge=0, le=1, description="Weight of the distillation term; 1 − alpha goes to CE on labels."
    )


@hookimpl
def graft_losses():
    return [
        LossSpec(
            name="distillation",
            kind="classification",
            factory=deferred(_IMPL, "_build"),
            params_model=DistillationParams,
            uses_context=True,
            uses_inputs=True,
            description="KL to a teacher checkpoint's softened logits (T² scaled) plus α-weighted CE.",
        )
    ]
