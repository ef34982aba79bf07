"""The losses of `classification`, in torch: imported when one is built.

`graftflow.plugins.losses.classification` registers them and checks their parameters without torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from graftflow.core import ConfigError, LossContext


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
