"""The losses of `domain`, in torch: imported when one is built.

`graftflow.plugins.losses.domain` registers them and checks their parameters without torch.
"""

from __future__ import annotations

import torch
from torch import nn


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
