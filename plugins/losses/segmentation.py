"""Segmentation losses on mask logits (N, C, H, W) and masks (N, C, H, W) in {0, 1}: smp's implementations.

Every class is its own binary mask (smp's "multilabel" mode), as Severstal's
classes are scored: a pixel may belong to none of them.

- dice: 1 − soft Dice per class (smp `DiceLoss`).
- bce-dice: binary cross-entropy plus Dice, weighted (the usual Severstal baseline).
- seg-focal: focal loss per pixel (smp `FocalLoss`), for masks that cover few pixels.
- lovasz: Lovász hinge (smp `LovaszLoss`), a surrogate of the IoU itself.
"""

from __future__ import annotations

from pydantic import Field

from graftflow.core import LossSpec, Params, deferred, forward_to, hookimpl

# The losses' torch code lives in _segmentation.py, imported when one is built: registering and
# checking a config imports no torch.
_IMPL = "graftflow.plugins.losses._segmentation"
__getattr__ = forward_to(_IMPL, ("BceDice", "_dice", "_focal", "_lovasz"))


class DiceParams(Params):
    smooth: float = Field(0.0, ge=0, description="Added to numerator and denominator (smoothing).")


class BceDiceParams(Params):
    bce_weight: float = Field(0.5, ge=0, description="Weight of the binary cross-entropy term.")
    dice_weight: float = Field(0.5, ge=0, description="Weight of the Dice term.")


class FocalParams(Params):
    gamma: float = Field(2.0, ge=0, description="Focusing strength (0 = binary cross-entropy).")
    alpha: float | None = Field(None, ge=0, le=1, description="Weight of the positive pixels, or none.")


class LovaszParams(Params):
    per_image: bool = Field(False, description="Average the loss per image instead of over the batch.")


@hookimpl
def graft_losses():
    kind = "segmentation"
    return [
        LossSpec(
            "dice",
            kind,
            deferred(_IMPL, "_dice"),
            DiceParams,
            "1 − soft Dice per class (smp DiceLoss)",
        ),
        LossSpec(
            "bce-dice",
            kind,
            deferred(_IMPL, "BceDice"),
            BceDiceParams,
            "binary cross-entropy + Dice (the default)",
        ),
        LossSpec(
            "seg-focal",
            kind,
            deferred(_IMPL, "_focal"),
            FocalParams,
            "focal loss per pixel (smp FocalLoss)",
        ),
        LossSpec(
            "lovasz",
            kind,
            deferred(_IMPL, "_lovasz"),
            LovaszParams,
            "Lovász hinge, an IoU surrogate (smp LovaszLoss)",
        ),
    ]
