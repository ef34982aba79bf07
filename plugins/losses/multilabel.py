"""Multi-label losses on logits (N, C) and multi-hot targets (N, C): every class is its own yes/no.

- bce: binary cross-entropy with logits (torch's), optionally with a positive weight per class.
- focal-bce: focal loss per class (Lin et al. 2017), (1 − p_t)^γ down-weights the easy decisions.
- asl: asymmetric loss (Ridnik et al. 2021): positives and negatives focused apart (γ+ , γ−), and
  easy negatives' probabilities shifted down by a margin `clip` so they stop contributing at all.
"""

from __future__ import annotations

from pydantic import Field

from graftflow.core import LossSpec, Params, deferred, forward_to, hookimpl

# The losses' torch code lives in _multilabel.py, imported when one is built: registering and
# checking a config imports no torch.
_IMPL = "graftflow.plugins.losses._multilabel"
__getattr__ = forward_to(_IMPL, ("Asl", "Bce", "FocalBce"))


class BceParams(Params):
    pos_weight: list[float] | None = Field(None, description="Weight of the positives of each class, or none.")


class FocalBceParams(Params):
    gamma: float = Field(2.0, ge=0, description="Focusing strength (0 = binary cross-entropy).")
    alpha: float = Field(0.25, ge=0, le=1, description="Weight of the positives (1 − alpha: the negatives).")


class AslParams(Params):
    gamma_pos: float = Field(0.0, ge=0, description="Focusing of the positives (γ+).")
    gamma_neg: float = Field(4.0, ge=0, description="Focusing of the negatives (γ−).")
    clip: float = Field(0.05, ge=0, lt=1, description="Probability margin m: negatives with p < m add nothing.")


@hookimpl
def graft_losses():
    kind = "multilabel"
    return [
        LossSpec(
            "bce",
            kind,
            deferred(_IMPL, "Bce"),
            BceParams,
            "binary cross-entropy with logits per class (the default)",
        ),
        LossSpec(
            "focal-bce",
            kind,
            deferred(_IMPL, "FocalBce"),
            FocalBceParams,
            "focal loss per class (Lin et al. 2017)",
        ),
        LossSpec(
            "asl",
            kind,
            deferred(_IMPL, "Asl"),
            AslParams,
            "asymmetric loss (Ridnik et al. 2021)",
        ),
    ]
