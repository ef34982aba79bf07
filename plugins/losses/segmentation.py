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
from torch import nn

from graftflow.core import LossSpec, Params, hookimpl


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


class BceDice(nn.Module):
    def __init__(self, bce_weight: float, dice_weight: float):
        import segmentation_models_pytorch as smp

        super().__init__()
        self.bce, self.dice = nn.BCEWithLogitsLoss(), smp.losses.DiceLoss("multilabel", from_logits=True)
        self.weights = (bce_weight, dice_weight)

    def forward(self, logits, masks):
        return self.weights[0] * self.bce(logits, masks) + self.weights[1] * self.dice(logits, masks)


def _dice(smooth: float) -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.losses.DiceLoss("multilabel", from_logits=True, smooth=smooth)


def _focal(gamma: float, alpha: float | None) -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.losses.FocalLoss("multilabel", gamma=gamma, alpha=alpha)


def _lovasz(per_image: bool) -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.losses.LovaszLoss("multilabel", per_image=per_image, from_logits=True)


@hookimpl
def graft_losses():
    kind = "segmentation"
    return [
        LossSpec("dice", kind, _dice, DiceParams, "1 − soft Dice per class (smp DiceLoss)"),
        LossSpec("bce-dice", kind, BceDice, BceDiceParams, "binary cross-entropy + Dice (the default)"),
        LossSpec("seg-focal", kind, _focal, FocalParams, "focal loss per pixel (smp FocalLoss)"),
        LossSpec("lovasz", kind, _lovasz, LovaszParams, "Lovász hinge, an IoU surrogate (smp LovaszLoss)"),
    ]
