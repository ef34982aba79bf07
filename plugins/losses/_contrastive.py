"""The losses of `contrastive`, in torch: imported when one is built.

`graftflow.plugins.losses.contrastive` registers them and checks their parameters without torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.2):
        super().__init__()
        self.temperature = temperature

    def forward(self, a: torch.Tensor, b: torch.Tensor, negatives: torch.Tensor | None = None) -> torch.Tensor:
        if a.shape != b.shape or a.ndim != 2:
            raise ValueError(
                f"infonce expects two (N, D) batches of paired embeddings, got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
        if negatives is not None:
            bank = F.normalize(negatives.float().detach(), dim=1)
            logits = torch.cat([(a * b).sum(1, keepdim=True), a @ bank.T], dim=1) / self.temperature
            return F.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long, device=a.device))
        n = len(a)
        z = torch.cat([a, b])
        sim = (z @ z.T) / self.temperature
        sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(sim, target)


class BatchHardTriplet(nn.Module):
    def __init__(self, margin: float = 1.0, p: float = 2.0):
        super().__init__()
        self.p = p
        self.triplet = nn.TripletMarginLoss(margin=margin, p=p)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = embeddings.float()
        with torch.no_grad():
            dist = torch.cdist(x, x, p=self.p)
            same = labels[:, None] == labels[None, :]
            eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
            pos = dist.masked_fill(~same | eye, float("-inf"))
            neg = dist.masked_fill(same, float("inf"))
            valid = torch.isfinite(pos.max(1).values) & torch.isfinite(neg.min(1).values)
            anchors = valid.nonzero().squeeze(1)
            hardest_pos, hardest_neg = pos.argmax(1)[anchors], neg.argmin(1)[anchors]
        if len(anchors) == 0:  # no class with two samples next to another class: nothing to pull or push
            return x.sum() * 0.0
        return self.triplet(x[anchors], x[hardest_pos], x[hardest_neg])
