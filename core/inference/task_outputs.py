"""Predictions of a task with its own outputs (masks, label sets): `TaskSpec.predict` over the model's raw outputs.

Images are read and decoded as for a classifier (the same decoder, resize, eval
transforms and normalisation of `Predictor`); each image's original height and
width go with its outputs, so a task can answer at the image's own size (masks).
Unreadable images are skipped with the reason, as always.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from graftflow.core.data.layouts import check_image
from graftflow.core.errors import ConfigError, DataError
from graftflow.core.inference.predictor import Predictor
from graftflow.core.inference.sources import ImageInput

GALLERY = 8  # images in a task's prediction gallery


def task_rows(
    predictor: Predictor,
    inputs: Iterable[ImageInput],
    progress: Callable[[int, int], None] | None = None,
    previews: list[bytes] | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Rows from `predictor.task.predict` for every readable image, and the skipped (name, why).

    `previews`, when given, receives the bytes of the first GALLERY readable images (for `write_gallery`),
    so the gallery needs no second read of the inputs and holds no more than it shows."""
    task = predictor.task
    inputs = list(inputs)
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    for start in range(0, len(inputs), predictor.batch_size):
        chunk = inputs[start : start + predictor.batch_size]
        names, sizes, pixels = [], [], []
        for item in chunk:
            try:
                data = item.read()
                width, height = check_image(data)
            except (OSError, DataError, ValueError) as exc:
                skipped.append((item.name, f"cannot be read as an image ({str(exc).splitlines()[0][:200]})"))
                continue
            decoded = predictor._decoded([data])[0]
            if isinstance(decoded, Exception):
                skipped.append((item.name, "cannot be decoded as an image"))
                continue
            names.append(item.name)
            sizes.append((height, width))
            if previews is not None and len(previews) < GALLERY:
                previews.append(data)
            pixels.append(decoded)
        if pixels:
            outputs = predictor.engine(predictor.batch(pixels)).float().cpu()
            rows += task.predict(outputs, predictor.meta, names, sizes, **predictor.task_params)
        if progress is not None:
            progress(min(start + len(chunk), len(inputs)), len(inputs))
    return rows, skipped


def check_format(predictor: Predictor, fmt: str | None, field: str = "--format") -> str | None:
    """The output format asked for is one of the model's task's own (`TaskSpec.formats`); None: the default."""
    task = predictor.task
    formats = tuple(getattr(task, "formats", ()) or ())
    if fmt is None:
        return formats[0] if formats else None
    if fmt not in formats:
        offered = ", ".join(formats) or "none (csv/parquet by --out's suffix)"
        raise ConfigError(f"{field}: '{fmt}' is not an output of task '{task.name}'; it writes {offered}")
    return fmt


def write_gallery(predictor: Predictor, rows, previews: list[bytes], path) -> Any:
    """The task's prediction gallery (`TaskSpec.gallery`) of the first rows over their images; None when the
    task draws none or nothing was predicted."""
    import numpy as np
    import torch

    gallery = getattr(predictor.task, "gallery", None)
    if gallery is None or not previews:
        return None
    from io import BytesIO

    from PIL import Image

    images = []
    for data in previews:
        with Image.open(BytesIO(data)) as im:
            images.append(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).contiguous())
    return gallery(rows[: len(images)], images, path)
