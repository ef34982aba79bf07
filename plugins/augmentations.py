"""Augmentations on torchvision.transforms.v2, plus the batch forms v2 has no equivalent for.

Per-sample ops ("sample") take and return one uint8 (C,H,W) tensor in a DataLoader
worker. Batch ops ("batch") take `(images, labels)` on the training device, images
float32 (N,C,H,W) in [0, 1] (normalisation follows them).

v2 applied to a 4-D tensor draws ONE set of random parameters for the whole batch
(every image flipped, or none). The batch forms here draw them per sample,
vectorised: a flip mask, a jitter factor, an erasing box, a crop box per image, so
`placement: batch` changes where an op runs, not what it does to each image.
MixUp and CutMix are v2's own, batch-only, and turn labels into class
probabilities (soft targets) that the loss must accept (cross-entropy does).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator

from graftflow.core import AugmentationSpec, AugmentContext, hookimpl, lazy_module

# Imported when an op is first built or run, not when the plugin registers (a config check needs no torch).
torch = lazy_module("torch")
F = lazy_module("torch.nn.functional")
v2 = lazy_module("torchvision.transforms.v2")
_color = lazy_module("torchvision.transforms.v2.functional._color")


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


class NoiseParams(_Params):
    sigma: float = Field(0.05, ge=0, le=1, description="Standard deviation, in units of the full pixel range.")
    p: float = Field(1.0, ge=0, le=1, description="Probability that an image gets noise.")


class ErasingParams(_Params):
    p: float = Field(0.5, ge=0, le=1, description="Probability of erasing a box.")
    scale_min: float = Field(0.02, gt=0, le=1, description="Smallest box area, as a fraction of the image.")
    scale_max: float = Field(0.33, gt=0, le=1, description="Largest box area, as a fraction of the image.")
    value: float = Field(0.0, ge=0, le=1, description="Fill value, as a fraction of the full pixel range.")

    @model_validator(mode="after")
    def _ordered(self) -> ErasingParams:
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min must be <= scale_max, got {self.scale_min} > {self.scale_max}")
        return self


class ProbParams(_Params):
    p: float = Field(0.5, ge=0, le=1, description="Probability of applying the op.")


class RandAugmentParams(_Params):
    num_ops: int = Field(2, ge=1, le=10, description="Ops applied in sequence to each image.")
    magnitude: int = Field(9, ge=0, le=30, description="Strength of every op (0 .. num_magnitude_bins − 1).")
    num_magnitude_bins: int = Field(31, ge=2, description="Steps of magnitude.")

    @model_validator(mode="after")
    def _in_bins(self) -> RandAugmentParams:
        if self.magnitude >= self.num_magnitude_bins:
            raise ValueError(
                f"magnitude must be < num_magnitude_bins ({self.num_magnitude_bins}), got {self.magnitude}"
            )
        return self


class TrivialAugmentParams(_Params):
    num_magnitude_bins: int = Field(31, ge=2, description="Steps of magnitude to draw from.")


class MixParams(_Params):
    alpha: float = Field(1.0, gt=0, description="Beta(α, α) distribution of the mixing weight λ.")
    p: float = Field(1.0, ge=0, le=1, description="Probability that a batch is mixed.")


# --- per-sample ops v2 lacks (uint8 in, uint8 out) --------------------------------------


class GaussianNoise:
    """Additive N(0, σ²) noise with probability p; σ in units of the full pixel range."""

    def __init__(self, sigma: float, p: float):
        self.sigma, self.p = sigma, p

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.p < 1 and float(torch.rand(())) >= self.p:
            return image
        scaled = image.float() / 255 if not image.is_floating_point() else image
        noisy = (scaled + torch.randn_like(scaled) * self.sigma).clamp_(0, 1)
        return (noisy * 255).round_().to(image.dtype) if not image.is_floating_point() else noisy


# --- batch forms with per-sample randomness (float [0, 1] batches) ------------------------


def _draw(n: int, p: float, device: torch.device) -> torch.Tensor:
    return torch.rand(n, device=device) < p


class BatchFlip:
    def __init__(self, p: float, dim: int):
        self.p, self.dim = p, dim

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        # Only the drawn images are flipped and copied in: half the memory traffic of a where() over a
        # flipped copy of the whole batch (2.3 → 1.0 ms for 64×3×64×64 on one core, measured).
        chosen = _draw(len(images), self.p, images.device).nonzero().squeeze(1)
        return images.index_copy(0, chosen, images.index_select(0, chosen).flip(self.dim)), labels


class BatchNoise:
    def __init__(self, sigma: float, p: float):
        self.sigma, self.p = sigma, p

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        mask = _draw(len(images), self.p, images.device).view(-1, 1, 1, 1)
        noise = torch.randn_like(images) * self.sigma * mask
        return (images + noise).clamp_(0, 1), labels


class BatchErasing:
    """Random erasing (cutout): per image, with probability p, one box of random area and aspect is filled."""

    def __init__(self, p: float, scale_min: float, scale_max: float, value: float, ratio=(0.3, 3.3)):
        self.p, self.scale, self.value = p, (scale_min, scale_max), value
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def boxes(self, n: int, h: int, w: int, device: torch.device) -> torch.Tensor:
        """(n, H, W) bool masks of the erased boxes."""
        area = torch.empty(n, device=device).uniform_(*self.scale) * h * w
        ratio = torch.exp(torch.empty(n, device=device).uniform_(*self.log_ratio))
        bh = torch.sqrt(area * ratio).round().clamp(1, h)
        bw = torch.sqrt(area / ratio).round().clamp(1, w)
        top = (torch.rand(n, device=device) * (h - bh + 1)).floor()
        left = (torch.rand(n, device=device) * (w - bw + 1)).floor()
        rows = torch.arange(h, device=device).view(1, h, 1)
        cols = torch.arange(w, device=device).view(1, 1, w)
        inside = (
            (rows >= top.view(-1, 1, 1))
            & (rows < (top + bh).view(-1, 1, 1))
            & (cols >= left.view(-1, 1, 1))
            & (cols < (left + bw).view(-1, 1, 1))
        )
        return inside & _draw(n, self.p, device).view(-1, 1, 1)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        mask = self.boxes(len(images), images.shape[-2], images.shape[-1], images.device)
        return images.masked_fill(mask[:, None], self.value), labels


class BatchJitter:
    """Brightness, contrast, saturation and hue, each factor drawn per image (applied in that order)."""

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float):
        self.b, self.c, self.s, self.h = brightness, contrast, saturation, hue

    @staticmethod
    def _factor(n: int, amount: float, device: torch.device) -> torch.Tensor:
        return torch.empty(n, 1, 1, 1, device=device).uniform_(max(0.0, 1 - amount), 1 + amount)

    LUMA = (0.2989, 0.587, 0.114)

    @classmethod
    def _gray(cls, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            return images
        r, g, b = images.unbind(1)  # three scaled adds: no (n, 3, H, W) temporary, no weight tensor per call
        return (r * cls.LUMA[0]).add_(g, alpha=cls.LUMA[1]).add_(b, alpha=cls.LUMA[2]).unsqueeze(1)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        n, device = len(images), images.device
        images = images.clone()  # then in place: one allocation for the three blends
        if self.b:
            images.mul_(self._factor(n, self.b, device)).clamp_(0, 1)
        if self.c:
            mean = self._gray(images).mean(dim=(1, 2, 3), keepdim=True)
            f = self._factor(n, self.c, device)
            images.mul_(f).add_((1 - f) * mean).clamp_(0, 1)
        if self.s and images.shape[1] == 3:
            f = self._factor(n, self.s, device)
            gray = self._gray(images)
            images.mul_(f).add_((1 - f) * gray).clamp_(0, 1)
        if self.h and images.shape[1] == 3:
            hsv = _color._rgb_to_hsv(images)
            shift = torch.empty(n, 1, 1, device=device).uniform_(-self.h, self.h)
            hue = (hsv[:, 0] + shift) % 1.0
            images = _color._hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1))
        return images, labels


class BatchResizedCrop:
    """Random resized crop per image, bilinear, vectorised, with torchvision's box distribution.

    As `RandomResizedCrop.get_params`: up to 10 draws of (area in [scale_min, 1], log-uniform aspect in
    [3/4, 4/3]) per image, the first whose box fits inside the image is kept, the whole image when none
    does. Clamping an oversized box instead would shrink large crops and skew their aspect.
    """

    ATTEMPTS = 10

    def __init__(self, size: int, scale_min: float, ratio=(3 / 4, 4 / 3)):
        self.size, self.scale = size, (scale_min, 1.0)
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))

    def boxes(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(width, height) of each image's crop, as fractions of the image's."""
        area = torch.empty(n, self.ATTEMPTS, device=device).uniform_(*self.scale)
        ratio = torch.exp(torch.empty(n, self.ATTEMPTS, device=device).uniform_(*self.log_ratio))
        w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        fits = (w <= 1) & (h <= 1)
        first = fits.int().argmax(1, keepdim=True)  # the first draw that fits (0 when none does)
        found = fits.any(1)
        one = torch.ones(n, device=device)
        return (
            torch.where(found, w.gather(1, first).squeeze(1), one),
            torch.where(found, h.gather(1, first).squeeze(1), one),
        )

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        n, device = len(images), images.device
        w, h = self.boxes(n, device)
        cx = (torch.rand(n, device=device) * 2 - 1) * (1 - w)  # centre in [-1, 1] coordinates
        cy = (torch.rand(n, device=device) * 2 - 1) * (1 - h)
        # The crop is axis-aligned, so its sampling grid is separable (cheaper than affine_grid).
        base = (torch.arange(self.size, device=device, dtype=images.dtype) * 2 + 1) / self.size - 1
        gx = (w[:, None] * base + cx[:, None]).to(images.dtype)  # (n, size)
        gy = (h[:, None] * base + cy[:, None]).to(images.dtype)
        grid = torch.stack(
            [gx[:, None, :].expand(n, self.size, self.size), gy[:, :, None].expand(n, self.size, self.size)], dim=-1
        )
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False), labels


class Mix:
    """v2.MixUp / v2.CutMix on the device, with probability p per batch; labels become class probabilities.

    Unlabelled batches (labels -1: self-supervised pretraining) mix their images only and
    keep their labels. Masks as labels (N, classes, H, W: a segmentation task) are cut
    with the image's box by CutMix (`cut_masks`); MixUp refuses them (validation says so
    before any work: its `batch_masks` is "refused").
    """

    def __init__(self, kind: str, alpha: float, p: float, num_classes: int):
        self.op, self.p, self.num_classes = getattr(v2, kind)(alpha=alpha), p, num_classes
        self.alpha, self.cuts = alpha, kind == "CutMix"

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        if labels.ndim == 4:
            if not self.cuts:
                raise ValueError(f"{type(self.op).__name__} cannot mix masks; it blends images (use cutmix)")
            return self.cut_masks(images, labels) if self._applies() else (images, labels)
        if labels.ndim == 1 and len(labels) and bool((labels < 0).all()):  # unlabelled: nothing to mix but pixels
            if not self._applies():
                return images, labels
            dummy = torch.ones(len(labels), 1, dtype=images.dtype, device=images.device)
            return self.op(images, dummy)[0], labels
        if labels.ndim == 1:
            num_classes = self.num_classes or int(labels.max()) + 1
            labels = F.one_hot(labels, num_classes).to(images.dtype)
        if not self._applies():
            return images, labels
        return self.op(images, labels)

    def _applies(self) -> bool:
        return self.p >= 1 or float(torch.rand(())) < self.p

    def cut_masks(self, images: torch.Tensor, masks: torch.Tensor):
        """CutMix's box (area 1 − λ, λ ~ Beta(α, α), as v2.CutMix draws it) pasted from the batch rolled by one,
        into the images and their masks alike: the pasted pixels bring their own mask."""
        h, w = images.shape[-2:]
        lam = float(torch.distributions.Beta(self.alpha, self.alpha).sample(()))
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        rh, rw = int(0.5 * h * math.sqrt(1 - lam)), int(0.5 * w * math.sqrt(1 - lam))
        y0, y1, x0, x1 = max(cy - rh, 0), min(cy + rh, h), max(cx - rw, 0), min(cx + rw, w)
        images, masks = images.clone(), masks.clone()
        images[..., y0:y1, x0:x1] = images.roll(1, 0)[..., y0:y1, x0:x1]
        masks[..., y0:y1, x0:x1] = masks.roll(1, 0)[..., y0:y1, x0:x1]
        return images, masks


def _mix(kind: str):
    """A factory of v2's `kind` ("MixUp", "CutMix"), named so registering it imports no torchvision."""

    def factory(alpha: float, p: float, context: AugmentContext) -> Mix:
        return Mix(kind, alpha, p, context.num_classes)

    return factory


@hookimpl
def graft_augmentations():
    return [
        AugmentationSpec(
            "horizontal-flip",
            lambda p: v2.RandomHorizontalFlip(p),
            params_model=FlipParams,
            batch_factory=lambda p: BatchFlip(p, -1),
            batch_masks="refused",  # the batch flip moves pixels, not masks: a mask task flips per sample
            description="mirror left-right",
        ),
        AugmentationSpec(
            "vertical-flip",
            lambda p: v2.RandomVerticalFlip(p),
            params_model=FlipParams,
            batch_factory=lambda p: BatchFlip(p, -2),
            batch_masks="refused",
            description="mirror top-bottom",
        ),
        AugmentationSpec(
            "random-rotation",
            lambda degrees: v2.RandomRotation(degrees),
            params_model=RotationParams,
            description="rotate by up to ±degrees",
        ),
        AugmentationSpec(
            "random-affine",
            lambda degrees, translate, scale_min, scale_max: v2.RandomAffine(
                degrees, translate=(translate, translate), scale=(scale_min, scale_max)
            ),
            params_model=AffineParams,
            description="small rotations, shifts and zooms",
        ),
        AugmentationSpec(
            "random-resized-crop",
            lambda size, scale_min: v2.RandomResizedCrop(size, scale=(scale_min, 1.0), antialias=True),
            batch_factory=lambda size, scale_min: BatchResizedCrop(size, scale_min),
            batch_masks="refused",
            params_model=CropParams,
            description="crop a random area and resize it",
        ),
        AugmentationSpec(
            "color-jitter",
            lambda **p: v2.ColorJitter(**p),
            params_model=JitterParams,
            batch_factory=lambda **p: BatchJitter(**p),
            batch_masks="image-only",
            description="random brightness, contrast, saturation and hue",
        ),
        AugmentationSpec(
            "gaussian-noise",
            lambda sigma, p: GaussianNoise(sigma, p),
            params_model=NoiseParams,
            batch_factory=lambda sigma, p: BatchNoise(sigma, p),
            batch_masks="image-only",
            description="additive Gaussian pixel noise",
        ),
        AugmentationSpec(
            "random-erasing",
            lambda p, scale_min, scale_max, value: v2.RandomErasing(
                p, scale=(scale_min, scale_max), value=round(value * 255)
            ),
            batch_factory=lambda **kw: BatchErasing(**kw),
            batch_masks="image-only",  # as v2.RandomErasing per sample: the box hides pixels, the mask stays
            params_model=ErasingParams,
            description="cutout: fill a random box",
        ),
        AugmentationSpec(
            "autocontrast",
            lambda p: v2.RandomAutocontrast(p),
            params_model=ProbParams,
            description="stretch each channel to the full range",
        ),
        AugmentationSpec(
            "equalize", lambda p: v2.RandomEqualize(p), params_model=ProbParams, description="histogram equalisation"
        ),
        AugmentationSpec(
            "rand-augment",
            lambda **kw: v2.RandAugment(**kw),
            params_model=RandAugmentParams,
            description="RandAugment: num_ops random ops at a fixed magnitude",
        ),
        AugmentationSpec(
            "trivial-augment",
            lambda **kw: v2.TrivialAugmentWide(**kw),
            params_model=TrivialAugmentParams,
            description="TrivialAugment: one random op per image",
        ),
        AugmentationSpec(
            "mixup",
            _mix("MixUp"),
            placement="batch",
            params_model=MixParams,
            uses_context=True,
            soft_targets=True,
            batch_masks="refused",  # a blend of two masks is no mask
            description="blend image pairs and their labels (soft targets)",
        ),
        AugmentationSpec(
            "cutmix",
            _mix("CutMix"),
            placement="batch",
            params_model=MixParams,
            uses_context=True,
            soft_targets=True,
            batch_masks="joint",  # the same box of the other image's mask is pasted too
            description="paste a box from another image; labels by area (soft targets), masks by the same box",
        ),
    ]
