"""Classification losses: `loss(logits, labels)` on a (N, C) batch of logits and (N,) class indices.

- cross-entropy: torch's own, with label smoothing.
- focal (Lin et al. 2017): −α_y (1 − p_y)^γ log p_y, softmax over the classes.
- class-balanced (Cui et al. 2019): each sample weighted by (1 − β) / (1 − β^n_y), the inverse
  "effective number" of its class's training images, normalised to sum to C over the classes;
  the class counts come from the stage (`LossContext.class_counts`).
- flooding (Ishida et al. 2020): |L − b| + b around any other registered loss (`inner`), which
  turns into gradient ascent once the training loss drops below the flood level b.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from graftflow.core import ConfigError, LossContext, LossRef, LossSpec, hookimpl


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CrossEntropyParams(_Params):
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Mass moved from the target to the other classes.")


class FocalParams(_Params):
    gamma: float = Field(2.0, ge=0, description="Focusing strength: (1 − p)^γ down-weights easy examples (0 = CE).")
    alpha: list[float] | None = Field(None, description="Per-class weights α_c (one per class), or none.")


class ClassBalancedParams(_Params):
    beta: float = Field(
        0.999, ge=0, lt=1, description="Effective-number β: 0 = no reweighting, → 1 = inverse frequency."
    )
    base: Literal["cross-entropy", "focal"] = Field(
        "cross-entropy", description="The per-sample loss that is reweighted."
    )
    gamma: float = Field(2.0, ge=0, description="Focal γ when base is focal.")


class FloodingParams(_Params):
    b: float = Field(0.1, ge=0, description="Flood level: the training loss is kept from going below it.")
    inner: LossRef = Field(
        default_factory=lambda: LossRef(name="cross-entropy"),
        description="The wrapped loss, written like finetune.loss: {name: ..., <params>}.",
    )


def focal_terms(logits: torch.Tensor, target: torch.Tensor, gamma: float) -> torch.Tensor:
    """Per-sample −(1 − p_y)^γ log p_y (float32)."""
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, target[:, None]).squeeze(1)
    return -((1 - log_p.exp()).clamp(min=0) ** gamma) * log_p


class FocalLoss(nn.Module):
    def __init__(self, gamma: float = 2.0, alpha: list[float] | None = None):
        super().__init__()
        self.gamma = gamma
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32) if alpha is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = focal_terms(logits, target, self.gamma)
        if self.alpha is not None:
            loss = loss * self.alpha[target]
        return loss.mean()


def class_balanced_weights(counts: list[int], beta: float) -> torch.Tensor:
    """(1 − β) / (1 − β^n_c), normalised to sum to the number of present classes; 0 for absent classes."""
    n = torch.tensor(counts, dtype=torch.float64)
    present = n > 0
    weights = torch.zeros_like(n)
    weights[present] = (1 - beta) / (1 - beta ** n[present]) if beta > 0 else 1.0
    weights = weights / weights.sum() * present.sum()
    return weights.float()


class ClassBalancedLoss(nn.Module):
    def __init__(self, weights: torch.Tensor, base: str = "cross-entropy", gamma: float = 2.0):
        super().__init__()
        self.base, self.gamma = base, gamma
        self.register_buffer("weights", weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.base == "focal":
            per_sample = focal_terms(logits, target, self.gamma)
        else:
            per_sample = F.cross_entropy(logits.float(), target, reduction="none")
        return (self.weights[target] * per_sample).mean()


class Flooding(nn.Module):
    def __init__(self, inner: nn.Module, b: float):
        super().__init__()
        self.inner, self.b = inner, b

    def forward(self, output: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        loss = self.inner(output, target, inputs) if inputs is not None else self.inner(output, target)
        return (loss - self.b).abs() + self.b


def _focal(gamma: float, alpha: list[float] | None, context: LossContext) -> FocalLoss:
    if alpha is not None and context.num_classes and len(alpha) != context.num_classes:
        raise ConfigError(f"{context.field}.alpha: {len(alpha)} values for {context.num_classes} classes")
    return FocalLoss(gamma, alpha)


def _class_balanced(beta: float, base: str, gamma: float, context: LossContext) -> ClassBalancedLoss:
    if not context.class_counts or not sum(context.class_counts):
        raise ConfigError(f"{context.field}: class-balanced needs labelled training data to count classes")
    return ClassBalancedLoss(class_balanced_weights(list(context.class_counts), beta), base, gamma)


def _flooding(b: float, inner: dict, context: LossContext) -> Flooding:
    return Flooding(context.make_loss(inner, f"{context.field}.inner"), b)


@hookimpl
def graft_losses():
    return [
        LossSpec(
            name="cross-entropy",
            kind="classification",
            factory=lambda label_smoothing=0.0: nn.CrossEntropyLoss(label_smoothing=label_smoothing),
            params_model=CrossEntropyParams,
            soft_targets=True,
            description="Softmax cross-entropy with optional label smoothing (torch.nn.CrossEntropyLoss); "
            "takes class indices or class probabilities (MixUp / CutMix).",
        ),
        LossSpec(
            name="focal",
            kind="classification",
            factory=_focal,
            params_model=FocalParams,
            uses_context=True,
            description="Focal loss −α(1−p)^γ log p: focuses training on hard examples.",
        ),
        LossSpec(
            name="class-balanced",
            kind="classification",
            factory=_class_balanced,
            params_model=ClassBalancedParams,
            uses_context=True,
            description="Cross-entropy or focal weighted by inverse effective class size (long-tailed data).",
        ),
        LossSpec(
            name="flooding",
            kind="classification",
            factory=_flooding,
            params_model=FloodingParams,
            uses_context=True,
            uses_inputs=True,
            description="|L − b| + b around another loss: keeps the training loss from sinking below b.",
        ),
    ]
