"""Input pipeline: store + augmentation vs torchvision ImageFolder + PIL transforms (issue 4: ratio ≥ 3).

N RGB JPEGs (64×64, 10 classes) are written to a temporary class-per-folder tree and
ingested into an Arrow store through the folder layout. Both pipelines then deliver
normalised float batches of 64 images at 64 px with the SAME augmentations —
random resized crop (scale 0.5–1) to 64, horizontal flip, colour jitter (brightness,
contrast, saturation 0.2), normalise — and the SAME number of DataLoader workers:

- baseline: `torchvision.datasets.ImageFolder` over the extracted files, PIL
  transforms per sample in the workers (`transforms.RandomResizedCrop`, ...,
  `ToTensor`, `Normalize`): the textbook PyTorch pipeline;
- graftflow: `ArrowImageDataset` over the store with the decoded cache
  (`data.cache_decoded`) and the ops as batch ops (`placement: batch`, per-sample
  random parameters) plus normalisation, run on each collated batch in the
  workers — what `task_loaders` does when the training device is the CPU.

Whole epochs are timed after one warm-up epoch (worker start-up, cache filling:
the cache build is reported separately as `cache_seconds`); images/s over the
timed epochs. A third figure runs the same ops per sample (v2 on uint8 tensors,
in the workers) over the cache, for reference.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import fsspec
import torch
from torchvision import datasets
from torchvision import transforms as T

from graftflow.core.config import PluginRef
from graftflow.core.data.augmentation import augment_policy, batch_normalizer, compose_batch
from graftflow.core.data.dataset import ArrowImageDataset, BatchCollate, make_loader, normalizer, select
from graftflow.core.data.layouts import records
from graftflow.core.data.splits import stratified_split
from graftflow.core.data.store import build_store
from graftflow.core.plugin_manager import PluginHost
from tests.benchmarks.bench_store import _write_images
from tests.benchmarks.results import Result

SIZE, BATCH, WORKERS = 64, 64, 2
POLICY = [
    {"name": "random-resized-crop", "size": SIZE, "scale_min": 0.5},
    {"name": "horizontal-flip", "p": 0.5},
    {"name": "color-jitter", "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.0},
]


def _epochs(loader, epochs: int, transform=None) -> tuple[float, int]:
    """Seconds for `epochs` whole epochs after one warm-up epoch, and images seen."""
    for images, labels in loader:  # warm-up
        if transform is not None:
            transform(images, labels)
    seen = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for images, labels in loader:
            if transform is not None:
                images, labels = transform(images, labels)
            assert images.dtype == torch.float32 and images.shape[-1] == SIZE
            seen += len(images)
    return time.perf_counter() - start, seen


def _baseline(root: Path, epochs: int) -> tuple[float, int]:
    transform = T.Compose(
        [
            T.RandomResizedCrop(SIZE, scale=(0.5, 1.0)),
            T.RandomHorizontalFlip(),
            T.ColorJitter(0.2, 0.2, 0.2),
            T.ToTensor(),
            T.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    dataset = datasets.ImageFolder(str(root), transform=transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=WORKERS,
        persistent_workers=True,
        generator=torch.Generator().manual_seed(0),
    )
    return _epochs(loader, epochs)


def _ours(url: str, epochs: int, placement: str) -> tuple[float, int, float]:
    host = PluginHost()
    refs = [PluginRef.model_validate({**p, "placement": placement}) for p in POLICY]
    policy = augment_policy(host, refs, "augment.train", "cpu")
    sel = select(url, ["train", "val", "test"], None, "bench")
    start = time.perf_counter()
    batched = placement == "batch"
    dataset = ArrowImageDataset(
        sel, 3, SIZE, policy.sample, None if batched else normalizer([0.5], [0.5], 3), cache=True
    )
    cache_seconds = time.perf_counter() - start
    # As task_loaders does on a CPU device: the batch ops run in the workers, right after collation.
    collate = BatchCollate(compose_batch(policy.batch, batch_normalizer([0.5], [0.5], 3))) if batched else None
    loader = make_loader(dataset, BATCH, True, WORKERS, seed=0, collate_fn=collate)
    seconds, seen = _epochs(loader, epochs)
    return seconds, seen, cache_seconds


def run(quick: bool) -> list[Result]:
    n = 500 if quick else 2000
    epochs = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="graft-bench-input-") as tmp:
        root = Path(tmp) / "folder"
        _write_images(root, n)
        url = str(Path(tmp) / "store")
        build_store(
            records(fsspec.filesystem("file"), str(root), {}, "bench"),
            url,
            {"val": 0.1, "test": 0.2, "seed": 0},
            {"source": "bench"},
            stratified_split,
        )
        base_s, base_n = _baseline(root, epochs)
        ours_s, ours_n, cache_s = _ours(url, epochs, "batch")
        sample_s, sample_n, _ = _ours(url, epochs, "sample")
    baseline = base_n / base_s
    note = (
        f"{n} JPEGs 64×64 RGB, 10 classes; random-resized-crop 64 (scale 0.5–1) + horizontal flip + colour jitter "
        f"0.2/0.2/0.2 + normalise; batch {BATCH}, {WORKERS} workers, {epochs} epoch(s) timed after a warm-up"
    )
    return [
        Result(
            "input_pipeline",
            ours_n / ours_s,
            baseline,
            "images/s",
            target_ratio=3.0,
            notes="Arrow store + decoded cache + batch ops (per-sample params) vs ImageFolder + PIL per-sample "
            f"transforms; {note}",
            extra={"seconds": ours_s, "baseline_seconds": base_s, "images": ours_n, "cache_seconds": cache_s},
        ),
        Result(
            "input_pipeline_sample_ops",
            sample_n / sample_s,
            baseline,
            "images/s",
            notes=f"Arrow store + decoded cache + the same ops per sample (v2 on uint8 tensors in workers); {note}",
            extra={"seconds": sample_s, "baseline_seconds": base_s, "images": sample_n},
        ),
    ]
