"""A Severstal-shaped competition drawn for tests: steel-grey images with defects as real shapes.

`train.csv` is `ImageId,ClassId,EncodedPixels` with one row per image and defect
class, the RLE computed here by the plainest loop over Kaggle's definition
(pixels numbered from 1 down each column, then across), independently of
`graftflow.core.data.masks`. Each class has its own shape and brightness, so a
small network can learn them in a few epochs: 1 bright rectangles (scratches),
2 dark ellipses (pits), 3 bright diagonal bands, 4 dark rectangles.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

HEIGHT, WIDTH = 32, 64  # Severstal's 256×1600 shape, scaled down


def kaggle_rle(mask: np.ndarray) -> str:
    """Runs of a boolean (H, W) mask as Kaggle writes them, one pixel at a time."""
    runs, start, number = [], None, 0
    for x in range(mask.shape[1]):
        for y in range(mask.shape[0]):
            number += 1
            if mask[y, x] and start is None:
                start = number
            elif not mask[y, x] and start is not None:
                runs += [start, number - start]
                start = None
    if start is not None:
        runs += [start, number + 1 - start]
    return " ".join(map(str, runs))


def _shape(draw: ImageDraw.ImageDraw, cls: int, rng) -> None:
    x, y = int(rng.integers(2, WIDTH - 26)), int(rng.integers(2, HEIGHT - 14))
    w, h = int(rng.integers(12, 24)), int(rng.integers(8, 12))
    if cls == 1:
        draw.rectangle([x, y, x + w, y + 3], fill=1)
    elif cls == 2:
        draw.ellipse([x, y, x + h, y + h], fill=1)
    elif cls == 3:
        draw.polygon([(x, y + h), (x + 4, y + h), (x + 4 + w, y), (x + w, y)], fill=1)
    else:
        draw.rectangle([x, y, x + w // 2, y + h], fill=1)


BRIGHTNESS = {1: 250, 2: 10, 3: 195, 4: 65}  # each class its own grey level, apart from the steel


def steel_image(classes, seed: int) -> tuple[bytes, dict[int, np.ndarray]]:
    """A JPEG-free (PNG, so the drawn pixels are exact) grey image and its mask per defect class."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(128, 6, (HEIGHT, WIDTH)).clip(0, 255)
    masks = {}
    for cls in classes:
        canvas = Image.new("1", (WIDTH, HEIGHT), 0)
        _shape(ImageDraw.Draw(canvas), cls, rng)
        mask = np.array(canvas, dtype=bool)
        for other in masks.values():
            mask &= ~other  # one class per pixel, as in Severstal
        masks[cls] = mask
        pixels[mask] = BRIGHTNESS[cls] + rng.normal(0, 3, int(mask.sum()))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue(), masks


PATTERN = [[1], [2], [], [3], [1, 2], [4], [], [2, 3], [1], [4]]


def competition(n: int = 60, test_images: int = 3, seed: int = 0):
    """files (train.csv, train_images/, test_images/, sample_submission.csv) and the true masks per image."""
    files, rows, truth = {}, ["ImageId,ClassId,EncodedPixels"], {}
    for i in range(n):
        name = f"{i:04x}a5e1.png"
        image, masks = steel_image(PATTERN[i % len(PATTERN)], seed * 10_000 + i)
        files[f"train_images/{name}"] = image
        rows += [f"{name},{cls},{kaggle_rle(mask)}" for cls, mask in masks.items() if mask.any()]
        truth[name] = masks
    for j in range(test_images):
        image, _ = steel_image(PATTERN[j % len(PATTERN)], 99_000 + j)
        files[f"test_images/test{j}.png"] = image
    files["train.csv"] = ("\n".join(rows) + "\n").encode()
    files["sample_submission.csv"] = b"ImageId,EncodedPixels,ClassId\n"
    return files, truth


def write_files(root, files: dict[str, bytes]) -> None:
    """The competition's files under `root` (a pathlib.Path), folders made as needed."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def table_layout(target: str = "mask") -> dict:
    """The table layout that reads this train.csv: masks from EncodedPixels (`target: mask`), or the
    label set of each image (`target: multi`, a row counted only where it has a mask)."""
    layout = {
        "kind": "table",
        "table": "train.csv",
        "image_column": "ImageId",
        "label_column": "ClassId",
        "images": "train_images",
        "target": target,
        "unlisted": "include",
    }
    return (
        {**layout, "mask_column": "EncodedPixels"}
        if target == "mask"
        else {**layout, "require_column": "EncodedPixels"}
    )
