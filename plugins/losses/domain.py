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

from pydantic import BaseModel, ConfigDict, Field

from graftflow.core import LossSpec, deferred, forward_to, hookimpl

# The losses' torch code lives in _domain.py, imported when one is built: registering and
# checking a config imports no torch.
_IMPL = "graftflow.plugins.losses._domain"
__getattr__ = forward_to(_IMPL, ("MMD", "gaussian_mmd2"))


class MMDParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bandwidths: list[float] | None = Field(None, description="Gaussian kernel widths σ; none: the median heuristic.")
    scales: list[float] = Field(
        [0.25, 0.5, 1.0, 2.0, 4.0], description="Multipliers of the median σ² (heuristic only)."
    )


@hookimpl
def graft_losses():
    return [
        LossSpec(
            name="mmd",
            kind="auxiliary",
            factory=deferred(_IMPL, "MMD"),
            params_model=MMDParams,
            description="Gaussian-kernel MMD² between two domains' features (domain adaptation term).",
        )
    ]
