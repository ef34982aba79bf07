"""Input pipeline: store + augmentation vs torchvision ImageFolder + PIL transforms (issue 19: ratio ≥ 5).

N RGB JPEGs (64×64, 10 classes) are written to a temporary class-per-folder tree and
ingested into an Arrow store through the folder layout. Every pipeline delivers
normalised float batches of 64 images at 64 px with the SAME augmentations —
random resized crop (scale 0.5–1) to 64, horizontal flip, colour jitter (brightness,
contrast, saturation 0.2), normalise — and the SAME number of DataLoader workers:

- baseline: `torchvision.datasets.ImageFolder` over the extracted files, PIL
  transforms per sample in the workers (`transforms.RandomResizedCrop`, ...,
  `ToTensor`, `Normalize`): the textbook PyTorch pipeline;
- graftflow: `ArrowImageDataset` over the store with the decoded cache
  (`data.cache_decoded`) and the ops as batch ops (`placement: batch`, per-sample
  random parameters) plus normalisation, run on each collated batch in the
  workers — what `task_loaders` does when the training device is the CPU;
- graftflow, the same ops per sample (v2 on uint8 tensors, in the workers), for reference.

What is timed is what a user waits for: from building the dataset (graftflow's decoded
cache included) and starting the workers to the end of the last of EPOCHS epochs.
`input_pipeline_same_cache` is the second, steady-state figure: the baseline too gets
its images decoded once into memory (PIL images, still transformed per sample), and
only the epochs after a warm-up epoch are timed, for both.

Each figure is measured in repeats whose order alternates (ABC, CBA, ABC, ...), so
machine drift and warm caches hit every pipeline alike; values are medians, the fastest repeat
of each (its minimum time) is in `extra` (`best`, `baseline_best`, `ratio_of_bests`).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import fsspec
import torch
from PIL import Image
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
PIL_TRANSFORM = T.Compose(
    [
        T.RandomResizedCrop(SIZE, scale=(0.5, 1.0)),
        T.RandomHorizontalFlip(),
        T.ColorJitter(0.2, 0.2, 0.2),
        T.ToTensor(),
        T.Normalize([0.5] * 3, [0.5] * 3),
    ]
)


def _drain(loader, epochs: int) -> int:
    seen = 0
    for _ in range(epochs):
        for images, _labels in loader:
            assert images.dtype == torch.float32 and images.shape[-1] == SIZE
            seen += len(images)
    return seen


def _loader(dataset, collate_fn=None) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=WORKERS,
        persistent_workers=True,
        generator=torch.Generator().manual_seed(0),
        collate_fn=collate_fn,
    )


class _DecodedFolder(torch.utils.data.Dataset):
    """ImageFolder's images decoded once into memory (PIL), then the same per-sample PIL transforms."""

    def __init__(self, root: Path):
        folder = datasets.ImageFolder(str(root))
        self.items = [(Image.open(path).convert("RGB"), label) for path, label in folder.samples]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        image, label = self.items[i]
        return PIL_TRANSFORM(image), label


def _ours_dataset(url: str, placement: str) -> tuple[ArrowImageDataset, Callable | None]:
    host = PluginHost()
    refs = [PluginRef.model_validate({**p, "placement": placement}) for p in POLICY]
    policy = augment_policy(host, refs, "augment.train", "cpu")
    sel = select(url, ["train", "val", "test"], None, "bench")
    batched = placement == "batch"
    dataset = ArrowImageDataset(
        sel, 3, SIZE, policy.sample, None if batched else normalizer([0.5], [0.5], 3), cache=True
    )
    # As task_loaders does on a CPU device: the batch ops run in the workers, right after collation.
    collate = BatchCollate(compose_batch(policy.batch, batch_normalizer([0.5], [0.5], 3))) if batched else None
    return dataset, collate


def _cold(make: Callable[[], torch.utils.data.DataLoader], epochs: int) -> tuple[float, int]:
    """Seconds from nothing (dataset, cache, workers) to the end of `epochs` epochs, and images delivered."""
    start = time.perf_counter()
    loader = make()
    seen = _drain(loader, epochs)
    return time.perf_counter() - start, seen


def _warm(make: Callable[[], torch.utils.data.DataLoader], epochs: int) -> tuple[float, int]:
    """Seconds for `epochs` epochs after a warm-up epoch (caches built, workers up), and images delivered."""
    loader = make()
    _drain(loader, 1)
    start = time.perf_counter()
    seen = _drain(loader, epochs)
    return time.perf_counter() - start, seen


def _alternating(pipelines: dict[str, Callable[[], tuple[float, int]]], repeats: int) -> dict[str, list[float]]:
    """images/s of each pipeline per repeat, the order reversed every other repeat (ABC CBA ABC ...)."""
    names, rates = list(pipelines), {name: [] for name in pipelines}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            seconds, seen = pipelines[name]()
            rates[name].append(seen / seconds)
    return rates


def _result(
    name: str, rates: dict[str, list[float]], ours: str, base: str, notes: str, target: float | None = None, **extra
) -> Result:
    return Result(
        name,
        statistics.median(rates[ours]),
        statistics.median(rates[base]),
        "images/s",
        target_ratio=target,
        notes=notes,
        extra={
            "images_per_s": rates[ours],
            "baseline_images_per_s": rates[base],
            # the fastest repeat of each (its minimum time) next to the medians
            "best": max(rates[ours]),
            "baseline_best": max(rates[base]),
            "ratio_of_bests": max(rates[ours]) / max(rates[base]),
            **extra,
        },
    )


def image_store(tmp: Path, n: int) -> tuple[Path, str]:
    """N benchmark JPEGs in a class-per-folder tree under `tmp`, and the Arrow store ingested from it."""
    root = tmp / "folder"
    _write_images(root, n)
    url = str(tmp / "store")
    build_store(
        records(fsspec.filesystem("file"), str(root), {}, "bench"),
        url,
        {"val": 0.1, "test": 0.2, "seed": 0},
        {"source": "bench"},
        stratified_split,
    )
    return root, url


def run(quick: bool = False, smoke: bool = False) -> list[Result]:
    n, epochs, repeats = (64, 1, 2) if smoke else (192, 1, 2) if quick else (2000, 3, 4)
    with tempfile.TemporaryDirectory(prefix="graft-bench-input-") as tmp:
        root, url = image_store(Path(tmp), n)

        def ours(placement: str) -> Callable[[], torch.utils.data.DataLoader]:
            def make():
                dataset, collate = _ours_dataset(url, placement)
                return make_loader(dataset, BATCH, True, WORKERS, seed=0, collate_fn=collate)

            return make

        def baseline() -> torch.utils.data.DataLoader:
            return _loader(datasets.ImageFolder(str(root), transform=PIL_TRANSFORM))

        cold = _alternating(
            {
                "baseline": lambda: _cold(baseline, epochs),
                "ours": lambda: _cold(ours("batch"), epochs),
                "sample": lambda: _cold(ours("sample"), epochs),
            },
            repeats,
        )
        warm = _alternating(
            {
                "baseline": lambda: _warm(lambda: _loader(_DecodedFolder(root)), epochs),
                "ours": lambda: _warm(ours("batch"), epochs),
            },
            repeats,
        )
    setup = (
        f"{n} JPEGs 64×64 RGB, 10 classes; random-resized-crop 64 (scale 0.5–1) + horizontal flip + colour jitter "
        f"0.2/0.2/0.2 + normalise; batch {BATCH}, {WORKERS} workers; {repeats} alternating repeats, medians"
    )
    cold_note = f"{epochs} epoch(s) from a cold start (dataset, decoded cache, workers) to the last batch"
    return [
        _result(
            "input_pipeline",
            cold,
            "ours",
            "baseline",
            f"Arrow store + decoded cache (its build timed) + batch ops (per-sample params) vs ImageFolder + PIL "
            f"per-sample transforms; {cold_note}; {setup}",
            target=5.0,
            epochs=epochs,
            images=n,
        ),
        _result(
            "input_pipeline_same_cache",
            warm,
            "ours",
            "baseline",
            f"steady state: {epochs} epoch(s) after a warm-up epoch, the baseline's images also decoded once into "
            f"memory (PIL, same per-sample transforms); {setup}",
            epochs=epochs,
            images=n,
        ),
        _result(
            "input_pipeline_sample_ops",
            cold,
            "sample",
            "baseline",
            f"Arrow store + decoded cache + the same ops per sample (v2 on uint8 tensors in workers); {cold_note}; "
            f"{setup}",
            epochs=epochs,
            images=n,
        ),
    ]
