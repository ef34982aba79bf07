"""The Arrow store: ingest speed, and read speed against PIL on the extracted folder, in the same run.

N small JPEGs (64×64, 10 classes) are written to a temporary class-per-folder
tree. Ingest = the folder layout (every image decoded once to check it) into
`build_store` (hashing, shards, split), in images/s. Read = decoding every image
to a 32×32 uint8 tensor: from the store through `ArrowImageDataset` (the
training path: torchvision decode from memory-mapped Parquet) versus the
baseline of `PIL.Image.open` on each file of the extracted folder, converted
and resized the same way. Single process, so the ratio is the per-image cost.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from graftflow.core.data.dataset import ArrowImageDataset, select
from graftflow.core.data.layouts import records
from graftflow.core.data.splits import stratified_split
from graftflow.core.data.store import build_store
from tests.benchmarks.results import Result

SIZE, OUT, CLASSES = 64, 32, 10


def _write_images(root: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = root / f"class{i % CLASSES}" / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)  # smooth-ish content, like photos, not noise
        Image.fromarray(base).resize((SIZE, SIZE), Image.BILINEAR).save(path, quality=90)
        paths.append(path)
    return paths


def _pil_read(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            tensor = pil_to_tensor(im.convert("RGB").resize((OUT, OUT), Image.BILINEAR))
        assert tensor.shape == (3, OUT, OUT)
    return time.perf_counter() - start


def _store_read(url: str) -> tuple[float, int]:
    start = time.perf_counter()
    sel = select(url, ["train", "val", "test"], None, "bench")
    dataset = ArrowImageDataset(sel, channels=3, image_size=OUT)
    for i in range(len(dataset)):
        image = dataset.decode(i)
    assert image.shape == (3, OUT, OUT) and image.dtype == torch.uint8
    return time.perf_counter() - start, len(dataset)


def run(quick: bool = False, smoke: bool = False) -> list[Result]:
    n = 40 if smoke else 500 if quick else 2000
    repeats = 1 if quick or smoke else 3
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="graft-bench-store-") as tmp:
        root = Path(tmp) / "folder"
        paths = _write_images(root, n)
        folder_mb = sum(p.stat().st_size for p in paths) / 2**20
        ingest = []
        for r in range(repeats):
            url = str(Path(tmp) / f"store-{r}")
            start = time.perf_counter()
            info = build_store(
                records(fsspec.filesystem("file"), str(root), {}, "bench"),
                url,
                {"val": 0.1, "test": 0.2, "seed": 0},
                {"source": "bench"},
                stratified_split,
            )
            ingest.append(time.perf_counter() - start)
            assert info.rows == n
        # Interleave the two readers so machine noise hits both alike; keep the best of each.
        store_times, pil_times = [], []
        for _ in range(repeats):
            seconds, rows = _store_read(url)
            assert rows == n
            store_times.append(seconds)
            pil_times.append(_pil_read(paths))
    note = (
        f"{n} JPEGs ({folder_mb:.1f} MiB) {SIZE}×{SIZE}, {CLASSES} classes, decode+resize to {OUT}×{OUT}, "
        f"1 thread, best of {repeats}"
    )
    return [
        Result(
            "store_ingest",
            n / min(ingest),
            None,
            "images/s",
            notes=f"folder layout (each image decoded once to check it) → build_store; {note}",
            extra={"seconds": min(ingest), "images": n},
        ),
        Result(
            "store_read",
            n / min(store_times),
            n / min(pil_times),
            "images/s",
            notes=f"ArrowImageDataset.decode over the store vs PIL.Image.open on the extracted files; {note}",
            extra={"store_seconds": min(store_times), "pil_seconds": min(pil_times), "images": n},
        ),
    ]
