"""Domain adaptation: maximum mean discrepancy between features of two domains.

`loss(source, target)` on (N, D) and (M, D) feature batches is the (biased, V-statistic)
squared MMD of Gretton et al. 2012 with a sum of Gaussian kernels
k(x, y) = Σ_σ exp(−‖x − y‖² / (2σ²)):
    MMD² = mean k(s, s') + mean k(t, t') − 2 mean k(s, t).
Bandwidths σ are given, or (default) the median heuristic: σ² = median pairwise squared
distance / 2, times each of `scales` (DAN-style multi-kernel). An "auxiliary" loss: a
domain-adaptation step adds λ·MMD between source and target features; no built-in stage
runs such a step yet.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from graftflow.core import LossSpec, hookimpl


class MMDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bandwidths: list[float] | None = Field(None, description="Gaussian kernel widths σ; none: the median heuristic.")
    scales: list[float] = Field(
        [0.25, 0.5, 1.0, 2.0, 4.0], description="Multipliers of the median σ² (heuristic only)."
    )


def gaussian_mmd2(source: torch.Tensor, target: torch.Tensor, sigmas2: torch.Tensor) -> torch.Tensor:
    x = torch.cat([source, target]).float()
    d2 = torch.cdist(x, x).pow(2)
    k = torch.exp(-d2[None] / (2 * sigmas2[:, None, None])).sum(0)
    n = len(source)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class MMD(nn.Module):
    def __init__(self, bandwidths: list[float] | None = None, scales: list[float] = (0.25, 0.5, 1.0, 2.0, 4.0)):
        super().__init__()
        self.bandwidths = list(bandwidths) if bandwidths else None
        self.scales = list(scales)

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        source, target = source.flatten(1), target.flatten(1)
        if self.bandwidths is not None:
            sigmas2 = torch.tensor(self.bandwidths, device=source.device) ** 2
        else:
            with torch.no_grad():
                x = torch.cat([source, target]).float()
                d2 = torch.cdist(x, x).pow(2)
                off = d2[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
                base = (off.median() / 2).clamp(min=1e-12)
            sigmas2 = base * torch.tensor(self.scales, device=source.device)
        return gaussian_mmd2(source, target, sigmas2)


@hookimpl
def graft_losses():
    return [
        LossSpec(
            name="mmd",
            kind="auxiliary",
            factory=MMD,
            params_model=MMDParams,
            description="Gaussian-kernel MMD² between two domains' features (domain adaptation term).",
        )
    ]
