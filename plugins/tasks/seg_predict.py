"""Segmentation predictions: masks at each image's own size, and Kaggle's submission format.

The model sees the image resized to `image_size`; its mask logits are resized back
to the image's height × width (bilinear) before the threshold, so a submission's
run-length encoding addresses the original pixels, as the competition scores them.
`kaggle-rle` writes `ImageId,EncodedPixels,ClassId`, one row per image and class
(an empty EncodedPixels: no mask), which `rle_decode` turns back into exactly the
predicted masks. `masks` writes one PNG per image into a folder (bit c = class c,
the store's own encoding). `gallery` draws the first predictions' masks over their
images, so a person can see what a submission says before sending it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

FORMATS = ("kaggle-rle", "masks")


def predict(
    outputs: torch.Tensor, meta: Mapping[str, Any], names, sizes, threshold: float = 0.5, min_area: float = 0.0
):
    """One row per image: its name, size, the classes present and every class's mask (bool (H, W))."""
    import torch.nn.functional as F

    from graftflow.plugins.tasks.seg_metrics import binarize

    rows = []
    for logits, name, (height, width) in zip(outputs, names, sizes, strict=True):
        full = F.interpolate(logits[None].float(), size=(height, width), mode="bilinear", align_corners=False)[0]
        masks = binarize(full.sigmoid()[None], threshold, min_area)[0].numpy()
        rows.append(
            {
                "source": name,
                "height": height,
                "width": width,
                "classes": [c for c, m in zip(meta["class_names"], masks, strict=True) if m.any()],
                "masks": {c: m for c, m in zip(meta["class_names"], masks, strict=True)},
            }
        )
    return rows


def image_id(source: str) -> str:
    """The file name Kaggle's ImageId column holds."""
    return source.replace("\\", "/").rsplit("/", 1)[-1].split("!")[-1]


def kaggle_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    from graftflow.core import rle_encode

    return [
        {"ImageId": image_id(row["source"]), "EncodedPixels": rle_encode(mask), "ClassId": name}
        for row in rows
        for name, mask in row["masks"].items()
    ]


def write(rows: Sequence[Mapping[str, Any]], dest: str, fmt: str) -> None:
    """`kaggle-rle`: the submission CSV at `dest`; `masks`: a folder of mask PNGs named after the images."""
    if fmt == "masks":
        import numpy as np

        from graftflow.core import encode_mask

        folder = Path(dest)
        folder.mkdir(parents=True, exist_ok=True)
        for row in rows:
            stem = image_id(row["source"]).rsplit(".", 1)[0]
            (folder / f"{stem}.png").write_bytes(encode_mask(np.stack(list(row["masks"].values()))))
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["ImageId", "EncodedPixels", "ClassId"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(kaggle_rows(rows))
    import fsspec

    with fsspec.open(dest, "w", encoding="utf-8", newline="") as f:  # a local path or any fsspec URL
        f.write(buffer.getvalue())


def gallery(rows: Sequence[Mapping[str, Any]], images: Sequence[torch.Tensor], path: Path) -> Path:
    """The predicted masks over each image (`TaskSpec.gallery`), at the image's own size, four to a row."""
    import numpy as np

    from graftflow.core import overlay_masks, save_grid

    tiles = [
        overlay_masks(image, torch.from_numpy(np.stack(list(row["masks"].values()))))
        for row, image in zip(rows, images, strict=True)
    ]
    return save_grid(tiles, Path(path), nrow=min(4, len(tiles)))
