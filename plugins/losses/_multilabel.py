"""The losses of `multilabel`, in torch: imported when one is built.

`graftflow.plugins.losses.multilabel` registers them and checks their parameters without torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
