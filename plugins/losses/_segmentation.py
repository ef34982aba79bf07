"""The losses of `segmentation`, in torch: imported when one is built.

`graftflow.plugins.losses.segmentation` registers them and checks their parameters without torch.
"""

from __future__ import annotations

from torch import nn


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
