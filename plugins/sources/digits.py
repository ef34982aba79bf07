"""The UCI handwritten digits shipped inside scikit-learn: real data, no download.

1,797 8×8 grayscale images (pixel values 0–16) in ten classes, encoded as PNG
so they go through the same store and decoder as any folder of images.
"""

from __future__ import annotations

import io
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from graftflow.core import DataSource, ImageRecord, hookimpl, lazy_module

# Imported when images are made, not when the source registers (a config check needs neither).
np = lazy_module("numpy")
Image = lazy_module("PIL.Image")


class DigitsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _load(params: dict, workdir: Path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        pixels = np.clip(np.round(image * (255 / 16)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        yield ImageRecord(image=buffer.getvalue(), label=str(int(target)), source=f"sklearn-digits/{i}")


def _fingerprint(params: dict) -> str:
    import sklearn

    return f"sklearn-digits/{sklearn.__version__}"


@hookimpl
def graft_data_sources():
    return [
        DataSource(
            name="sklearn-digits",
            load=_load,
            fingerprint=_fingerprint,
            params_model=DigitsParams,
            description="UCI handwritten digits inside scikit-learn (1,797 8x8 images, 10 classes)",
        )
    ]
