"""Per-sample augmentations on torchvision.transforms.v2 (uint8 C×H×W tensors)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torchvision.transforms import v2

from core import AugmentationSpec, hookimpl


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlipParams(_Params):
    p: float = Field(0.5, ge=0, le=1, description="Probability of flipping.")


class AffineParams(_Params):
    degrees: float = Field(10, ge=0, le=180, description="Largest rotation, in degrees.")
    translate: float = Field(0.1, ge=0, le=1, description="Largest shift, as a fraction of the size.")
    scale_min: float = Field(0.9, gt=0, description="Smallest zoom factor.")
    scale_max: float = Field(1.1, gt=0, description="Largest zoom factor.")


class CropParams(_Params):
    size: int = Field(32, gt=0, description="Output size in pixels.")
    scale_min: float = Field(0.5, gt=0, le=1, description="Smallest crop area, as a fraction of the image.")


class JitterParams(_Params):
    brightness: float = Field(0.2, ge=0)
    contrast: float = Field(0.2, ge=0)
    saturation: float = Field(0.0, ge=0)
    hue: float = Field(0.0, ge=0, le=0.5)


class RotationParams(_Params):
    degrees: float = Field(15, ge=0, le=180, description="Largest rotation, in degrees.")


@hookimpl
def graft_augmentations():
    return [
        AugmentationSpec("horizontal-flip", lambda p: v2.RandomHorizontalFlip(p), params_model=FlipParams,
                         description="mirror left-right"),
        AugmentationSpec("vertical-flip", lambda p: v2.RandomVerticalFlip(p), params_model=FlipParams,
                         description="mirror top-bottom"),
        AugmentationSpec("random-rotation", lambda degrees: v2.RandomRotation(degrees),
                         params_model=RotationParams, description="rotate by up to ±degrees"),
        AugmentationSpec(
            "random-affine",
            lambda degrees, translate, scale_min, scale_max: v2.RandomAffine(
                degrees, translate=(translate, translate), scale=(scale_min, scale_max)),
            params_model=AffineParams, description="small rotations, shifts and zooms"),
        AugmentationSpec("random-resized-crop",
                         lambda size, scale_min: v2.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True),
                         params_model=CropParams, description="crop a random area and resize it"),
        AugmentationSpec("color-jitter", lambda **p: v2.ColorJitter(**p), params_model=JitterParams,
                         description="random brightness, contrast, saturation and hue"),
    ]
