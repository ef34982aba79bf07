"""Multi-label losses on logits (N, C) and multi-hot targets (N, C): every class is its own yes/no.

- bce: binary cross-entropy with logits (torch's), optionally with a positive weight per class.
- focal-bce: focal loss per class (Lin et al. 2017), (1 − p_t)^γ down-weights the easy decisions.
- asl: asymmetric loss (Ridnik et al. 2021): positives and negatives focused apart (γ+ , γ−), and
  easy negatives' probabilities shifted down by a margin `clip` so they stop contributing at all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from graftflow.core import LossSpec, Params, hookimpl


class BceParams(Params):
    pos_weight: list[float] | None = Field(None, description="Weight of the positives of each class, or none.")


class FocalBceParams(Params):
    gamma: float = Field(2.0, ge=0, description="Focusing strength (0 = binary cross-entropy).")
    alpha: float = Field(0.25, ge=0, le=1, description="Weight of the positives (1 − alpha: the negatives).")


class AslParams(Params):
    gamma_pos: float = Field(0.0, ge=0, description="Focusing of the positives (γ+).")
    gamma_neg: float = Field(4.0, ge=0, description="Focusing of the negatives (γ−).")
    clip: float = Field(0.05, ge=0, lt=1, description="Probability margin m: negatives with p < m add nothing.")


class Bce(nn.Module):
    def __init__(self, pos_weight: list[float] | None):
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor(pos_weight) if pos_weight else None)

    def forward(self, logits, targets):
        return F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=self.pos_weight)


class FocalBce(nn.Module):
    def __init__(self, gamma: float, alpha: float):
        super().__init__()
        self.gamma, self.alpha = gamma, alpha

    def forward(self, logits, targets):
        targets = targets.float()
        ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        p_t = torch.exp(-ce)
        weight = self.alpha * targets + (1 - self.alpha) * (1 - targets)
        return (weight * (1 - p_t) ** self.gamma * ce).sum(1).mean()


class Asl(nn.Module):
    """L = −y (1 − p)^γ+ log p − (1 − y) p_m^γ− log(1 − p_m), p_m = max(p − m, 0)."""

    def __init__(self, gamma_pos: float, gamma_neg: float, clip: float):
        super().__init__()
        self.gamma_pos, self.gamma_neg, self.clip = gamma_pos, gamma_neg, clip

    def forward(self, logits, targets):
        targets = targets.float()
        p = torch.sigmoid(logits.float())
        p_m = (p - self.clip).clamp(min=0) if self.clip > 0 else p
        eps = 1e-8
        pos = targets * (1 - p) ** self.gamma_pos * torch.log(p.clamp(min=eps))
        neg = (1 - targets) * p_m**self.gamma_neg * torch.log((1 - p_m).clamp(min=eps))
        return -(pos + neg).sum(1).mean()


@hookimpl
def graft_losses():
    kind = "multilabel"
    return [
        LossSpec("bce", kind, Bce, BceParams, "binary cross-entropy with logits per class (the default)"),
        LossSpec("focal-bce", kind, FocalBce, FocalBceParams, "focal loss per class (Lin et al. 2017)"),
        LossSpec("asl", kind, Asl, AslParams, "asymmetric loss (Ridnik et al. 2021)"),
    ]
