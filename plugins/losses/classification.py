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

from pydantic import BaseModel, ConfigDict, Field

from graftflow.core import LossRef, LossSpec, deferred, forward_to, hookimpl, lazy_module

# The losses' torch code lives in _classification.py, imported when one is built: registering and
# checking a config imports no torch.
_IMPL = "graftflow.plugins.losses._classification"
nn = lazy_module("torch.nn")
__getattr__ = forward_to(
    _IMPL,
    (
        "ClassBalancedLoss",
        "Flooding",
        "FocalLoss",
        "_class_balanced",
        "_flooding",
        "_focal",
        "class_balanced_weights",
        "focal_terms",
    ),
)


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
            factory=deferred(_IMPL, "_focal"),
            params_model=FocalParams,
            uses_context=True,
            description="Focal loss −α(1−p)^γ log p: focuses training on hard examples.",
        ),
        LossSpec(
            name="class-balanced",
            kind="classification",
            factory=deferred(_IMPL, "_class_balanced"),
            params_model=ClassBalancedParams,
            uses_context=True,
            description="Cross-entropy or focal weighted by inverse effective class size (long-tailed data).",
        ),
        LossSpec(
            name="flooding",
            kind="classification",
            factory=deferred(_IMPL, "_flooding"),
            params_model=FloodingParams,
            uses_context=True,
            uses_inputs=True,
            description="|L − b| + b around another loss: keeps the training loss from sinking below b.",
        ),
    ]
