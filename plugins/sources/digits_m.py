"""Digits-M: the UCI digits blended with colour photographs, the way MNIST-M was made from MNIST.

Ganin & Lempitsky (2015) built MNIST-M by blending each MNIST digit over a
random patch of a BSDS500 photograph: out = |patch − digit|, per channel. Here
the digits are scikit-learn's 8×8 UCI digits (upscaled to `size`) and the
photographs are the two that scikit-learn ships (`load_sample_images`: a
Chinese temple and a flower), so the second domain of a domain-shift benchmark
ships with the package too. Every digit's patch (photo, position) comes from a
generator seeded by `seed` and the digit's index: the same seed gives the same
images, byte for byte.
"""

from __future__ import annotations

import io
from pathlib import Path

from pydantic import Field

from graftflow.core import DataSource, ImageRecord, Params, hookimpl, lazy_module

# Imported when images are made, not when the source registers (a config check needs neither).
np = lazy_module("numpy")
Image = lazy_module("PIL.Image")


class DigitsMParams(Params):
    size: int = Field(32, ge=8, le=128, description="Side of the blended colour images, in pixels.")
    seed: int = Field(0, description="Seed of the photo patches (which photo, where).")


def blend(digit: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """MNIST-M's blend: |patch − digit| per channel, on uint8 images (digit H×W, patch H×W×3)."""
    return np.abs(patch.astype(np.int16) - digit.astype(np.int16)[..., None]).astype(np.uint8)


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(image, dtype=np.uint8) for image in load_sample_images().images]


def _load(params: dict, workdir: Path):
    from sklearn.datasets import load_digits

    p = DigitsMParams.model_validate(params)
    photos = _photos()
    digits = load_digits()
    for i, (image, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        pixels = np.clip(np.round(image * (255 / 16)), 0, 255).astype(np.uint8)
        digit = np.asarray(Image.fromarray(pixels, mode="L").resize((p.size, p.size), Image.BILINEAR))
        rng = np.random.default_rng([p.seed, i])
        photo = photos[rng.integers(len(photos))]
        top, left = rng.integers(photo.shape[0] - p.size), rng.integers(photo.shape[1] - p.size)
        patch = photo[top : top + p.size, left : left + p.size]
        buffer = io.BytesIO()
        Image.fromarray(blend(digit, patch), mode="RGB").save(buffer, format="PNG")
        yield ImageRecord(image=buffer.getvalue(), label=str(int(target)), source=f"sklearn-digits-m/{i}")


def _fingerprint(params: dict) -> str:
    import sklearn

    p = DigitsMParams.model_validate(params)
    return f"sklearn-digits-m/{sklearn.__version__}/size={p.size}/seed={p.seed}"


@hookimpl
def graft_data_sources():
    return [
        DataSource(
            name="sklearn-digits-m",
            load=_load,
            fingerprint=_fingerprint,
            params_model=DigitsMParams,
            description="the UCI digits blended with scikit-learn's colour photos (MNIST-M's recipe), deterministic",
        )
    ]
