"""Contrastive and metric losses on embeddings.

- infonce (kind "pretext"): `loss(a, b)` with a[i] and b[i] two views of one image.
  Without a bank it is SimCLR's NT-Xent: all 2N embeddings are anchors, each with its
  partner as the positive and the other 2N − 2 as negatives, cosine similarity over a
  temperature τ. With `negatives=` (a (K, D) bank, e.g. a MoCo queue) each a[i] is
  contrasted against b[i] and the bank: cross-entropy over [a·b, a·bank] / τ.
- triplet (kind "auxiliary"): batch-hard triplet margin loss (Hermans et al. 2017) on
  (N, D) embeddings with (N,) labels: for each anchor its farthest positive and nearest
  negative, then torch's TripletMarginLoss. Not wired into a built-in training step.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from graftflow.core import LossSpec, deferred, forward_to, hookimpl

# The losses' torch code lives in _contrastive.py, imported when one is built: registering and
# checking a config imports no torch.
_IMPL = "graftflow.plugins.losses._contrastive"
__getattr__ = forward_to(_IMPL, ("BatchHardTriplet", "InfoNCE"))


class InfoNCEParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.2, gt=0, le=10, description="Softmax temperature τ on cosine similarities.")


class TripletParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    margin: float = Field(1.0, gt=0, description="Required gap between the positive and the negative distance.")
    p: float = Field(2.0, gt=0, description="Norm of the pairwise distance.")


@hookimpl
def graft_losses():
    return [
        LossSpec(
            name="infonce",
            kind="pretext",
            factory=deferred(_IMPL, "InfoNCE"),
            params_model=InfoNCEParams,
            description="InfoNCE / NT-Xent on paired views (SimCLR; MoCo with a negative bank).",
        ),
        LossSpec(
            name="triplet",
            kind="auxiliary",
            factory=deferred(_IMPL, "BatchHardTriplet"),
            params_model=TripletParams,
            description="Batch-hard triplet margin loss on embeddings with labels (torch's TripletMarginLoss).",
        ),
    ]
