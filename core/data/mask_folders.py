"""Segmentation masks from mask image folders: the `mask-folders` layout.

The other way segmentation data ships, beside Severstal's RLE column: an image
folder and a mask folder whose files share a stem (`images/a.jpg` ↔ `masks/a.png`).
Two mask styles:

- `index`: one PNG per image whose pixel value is the class index (0 = background,
  1.. = `classes[0]`, `classes[1]`, ...); the classes must be named, because a
  value no PNG happens to hold is still a class.
- `per-class`: one sub-folder per class (`masks/<class>/a.png`), any non-zero pixel
  is the class; the classes are the sub-folders (or `classes`, which fixes the order).

Either way the record carries the same encoded mask column as the RLE path
(`masks.encode_mask`), so a store built from folders is content-addressed the same
way, and an image with no mask file has an empty mask.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from graftflow.core.errors import DataError
from graftflow.core.lazy import lazy_module
from graftflow.core.specs import ImageRecord

np = lazy_module("numpy")  # imported when masks are read: the layout's parameters are checked without it


class MaskFoldersLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["mask-folders"] = "mask-folders"
    images: str = Field("images", description="Folder (relative to the data) of the images.")
    masks: str = Field("masks", description="Folder of the mask PNGs, one per image with the image's stem.")
    style: Literal["index", "per-class"] = Field(
        "index",
        description="index: a PNG whose pixel value is the class index (0 = background); "
        "per-class: a sub-folder per class, any non-zero pixel is that class.",
    )
    classes: list[str] | None = Field(
        None,
        description="Class names in mask-channel order; style index: the names of pixel values 1, 2, ... "
        "(required); per-class: default the sub-folders, sorted.",
    )


def _stems(files: dict[str, str]) -> dict[str, str]:
    """relative path → full path, keyed by the path without its suffix (`a.png` → `a`)."""
    return {rel.rsplit(".", 1)[0]: path for rel, path in files.items()}


def _pixels(fs, path: str, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(fs.cat_file(path))) as im:
            return np.asarray(im.convert("L") if im.mode not in ("L", "P", "I", "I;16", "1") else im).astype(np.int64)
    except Exception as exc:  # PIL's many error kinds: the file is named either way
        raise DataError(f"{where}: cannot be read as a mask image ({exc})") from None


def _mask_files(fs, masks_root: str, layout: MaskFoldersLayout) -> tuple[dict[str, dict[str, str]], tuple[str, ...]]:
    """class → stem → mask path, and the classes in channel order."""
    from graftflow.core.data.layouts import _relative_files

    files = _relative_files(fs, masks_root)
    if layout.style == "index":
        if not layout.classes:
            raise DataError("data.source.layout.classes: style index needs the class names of pixel values 1, 2, ...")
        return {"*": _stems(files)}, tuple(layout.classes)
    by_class: dict[str, dict[str, str]] = {}
    for rel, path in files.items():
        if "/" in rel:
            cls, inner = rel.split("/", 1)
            by_class.setdefault(cls, {})[inner.rsplit(".", 1)[0]] = path
    classes = tuple(layout.classes) if layout.classes else tuple(sorted(by_class))
    unknown = sorted(set(by_class) - set(classes))
    if unknown:
        raise DataError(f"data.source.layout.classes: mask folder '{unknown[0]}' is not one of the classes")
    if not classes:
        raise DataError(f"data.source.layout.masks: '{layout.masks}' has no class sub-folders (style per-class)")
    return by_class, classes


def masks_for(fs, stem: str, found, classes, style: str, shape: tuple[int, int]) -> np.ndarray:
    """(C, H, W) booleans for one image; a class or image without a mask file is empty."""
    out = np.zeros((len(classes), *shape), dtype=bool)
    if style == "index":
        path = found["*"].get(stem)
        if path is None:
            return out
        values = _pixels(fs, path, f"data.source.layout.masks: '{stem}'")
        if values.shape != shape:
            raise DataError(f"data.source.layout.masks: '{stem}' is {values.shape[::-1]}, its image {shape[::-1]}")
        if values.max() > len(classes):
            raise DataError(
                f"data.source.layout.classes: mask '{stem}' has pixel value {values.max()}, "
                f"but only {len(classes)} classes are named"
            )
        for c in range(len(classes)):
            out[c] = values == c + 1
        return out
    for c, cls in enumerate(classes):
        path = found.get(cls, {}).get(stem)
        if path is not None:
            values = _pixels(fs, path, f"data.source.layout.masks: '{cls}/{stem}'")
            if values.shape != shape:
                raise DataError(f"data.source.layout.masks: '{cls}/{stem}' is not its image's size {shape[::-1]}")
            out[c] = values > 0
    return out


def mask_folder_records(fs, root: str, p, where: str, report: dict) -> Iterator[ImageRecord]:
    """Each image of `images` with its masks from `masks`, encoded as the store's mask column."""
    from graftflow.core.data.layouts import BadImages, _join, _read, _relative_files, _safe_rel, check_image
    from graftflow.core.data.masks import encode_mask

    layout: MaskFoldersLayout = p.layout
    images_root = _join(root, _safe_rel(layout.images, "data.source.layout.images"))
    masks_root = _join(root, _safe_rel(layout.masks, "data.source.layout.masks"))
    for field, folder in (("images", images_root), ("masks", masks_root)):
        if not fs.isdir(folder):
            raise DataError(f"data.source.layout.{field}: '{getattr(layout, field)}' is not a folder in {where}")
    found, classes = _mask_files(fs, masks_root, layout)
    suffixes = tuple(s.lower() for s in p.extensions)
    images = {r: q for r, q in sorted(_relative_files(fs, images_root).items()) if r.lower().endswith(suffixes)}
    if not images:
        raise DataError(f"data.source.layout.images: no images in '{layout.images}' of {where}")
    bad = BadImages(p.on_bad_image, report)
    report.update(layout="mask-folders", target="mask", style=layout.style, listed=len(images))
    for rel, path in images.items():
        data = _read(fs, path, rel, bad)
        if data is None:
            continue
        width, height = check_image(data)
        masks = masks_for(fs, rel.rsplit(".", 1)[0], found, classes, layout.style, (height, width))
        present = tuple(c for c, m in zip(classes, masks, strict=True) if m.any())
        yield ImageRecord(
            image=data,
            label="|".join(present),
            source=fs.unstrip_protocol(path),
            labels=present,
            mask=encode_mask(masks),
            mask_classes=classes,
        )
    bad.log()
