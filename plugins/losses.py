"""Classification losses."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from core import LossSpec, hookimpl


class CrossEntropyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Mass moved from the target to the other classes.")


@hookimpl
def graft_losses():
    return [
        LossSpec(
            name="cross-entropy", kind="classification",
            factory=lambda label_smoothing=0.0: nn.CrossEntropyLoss(label_smoothing=label_smoothing),
            params_model=CrossEntropyParams,
            description="Softmax cross-entropy with optional label smoothing (torch.nn.CrossEntropyLoss).",
        )
    ]
