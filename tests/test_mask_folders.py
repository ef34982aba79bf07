"""The mask-folders layout: masks from mask image folders become the same encoded mask column as RLE tables."""

from __future__ import annotations

import csv
import io

import fsspec
import numpy as np
import pytest
from PIL import Image

from graftflow.core.data.layouts import records
from graftflow.core.data.masks import decode_mask, rle_encode
from graftflow.core.errors import DataError

H, W = 8, 12


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _truth() -> dict[str, np.ndarray]:
    """Three images' masks for classes a, b (no overlap, so one index PNG can hold them); c.png has none."""
    a = np.zeros((2, H, W), bool)
    a[0, 1:4, 2:7] = True
    a[1, 5:8, 8:11] = True
    b = np.zeros((2, H, W), bool)
    b[1, :, :3] = True
    return {"a": a, "b": b, "c": np.zeros((2, H, W), bool)}


def _write(root, truth) -> None:
    """One dataset in three layouts: an index PNG folder, a folder per class, and Severstal's RLE table."""
    rng = np.random.default_rng(0)
    rows = [["ImageId", "ClassId", "EncodedPixels"]]
    for stem, masks in truth.items():
        (root / "images").mkdir(exist_ok=True)
        (root / "images" / f"{stem}.png").write_bytes(_png(rng.integers(0, 255, (H, W))))
        index = masks[0] * 1 + masks[1] * 2
        if masks.any():  # an image without a mask file has an empty mask
            (root / "masks").mkdir(exist_ok=True)
            (root / "masks" / f"{stem}.png").write_bytes(_png(index))
        for c, name in enumerate(("a", "b")):
            if masks[c].any():
                (root / "per-class" / name).mkdir(parents=True, exist_ok=True)
                (root / "per-class" / name / f"{stem}.png").write_bytes(_png(masks[c] * 255))
                rows.append([f"{stem}.png", name, rle_encode(masks[c])])
    with open(root / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _records(root, layout: dict) -> dict[str, object]:
    out = records(fsspec.filesystem("file"), str(root), {"layout": layout}, "the test folder")
    return {r.source.rsplit("/", 1)[1]: r for r in out}


def test_index_and_per_class_folders_give_the_rle_tables_mask_column(tmp_path):
    truth = _truth()
    _write(tmp_path, truth)
    index = _records(tmp_path, {"kind": "mask-folders", "classes": ["a", "b"]})
    per_class = _records(tmp_path, {"kind": "mask-folders", "masks": "per-class", "style": "per-class"})
    table = _records(
        tmp_path,
        {"kind": "table", "table": "train.csv", "image_column": "ImageId", "label_column": "ClassId",
         "images": "images", "target": "mask", "mask_column": "EncodedPixels", "unlisted": "include"},
    )  # fmt: skip
    assert set(index) == set(per_class) == set(table) == {"a.png", "b.png", "c.png"}
    for name, rec in index.items():
        assert rec.mask_classes == ("a", "b")
        assert (decode_mask(rec.mask, 2) == truth[name[:-4]]).all(), name
        # the same bytes as the RLE path: the store's rows (and so its content address) do not depend on the layout
        assert rec.mask == per_class[name].mask == table[name].mask and rec.image == table[name].image
        assert rec.labels == per_class[name].labels == table[name].labels
    assert index["a.png"].labels == ("a", "b") and index["c.png"].labels == ()


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"kind": "mask-folders"}, "data.source.layout.classes: style index needs the class names"),
        ({"kind": "mask-folders", "classes": ["a"]}, "data.source.layout.classes: mask 'a' has pixel value 2"),
        ({"kind": "mask-folders", "masks": "nowhere", "classes": ["a"]}, "data.source.layout.masks: 'nowhere'"),
        (
            {"kind": "mask-folders", "masks": "per-class", "style": "per-class", "classes": ["a"]},
            "data.source.layout.classes: mask folder 'b' is not one of the classes",
        ),
    ],
)
def test_mask_folder_mistakes_name_the_field(tmp_path, layout, message):
    _write(tmp_path, _truth())
    with pytest.raises(DataError, match=message):
        _records(tmp_path, layout)
