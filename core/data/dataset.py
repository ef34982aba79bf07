"""Torch datasets and loaders over the Arrow store.

Decoding (torchvision.io) and per-sample transforms run in DataLoader workers;
the store itself is memory-mapped, so a worker holds offsets, not copies.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from graftflow.core.data.store import read_info, read_table
from graftflow.core.errors import DataError


@dataclass
class Selection:
    """Rows of one split, optionally restricted to some classes and relabelled 0..k-1.

    A multi-label or mask store's rows carry their targets in `targets` (the `labels`
    list column, or the encoded `mask` column) and -1 in `labels`.
    """

    images: pa.Array
    labels: np.ndarray
    class_names: list[str]
    targets: pa.Array | None = None
    target: str = "single"

    def __len__(self) -> int:
        return len(self.labels)


TARGET_COLUMNS = {"multi": "labels", "mask": "mask"}


def select(
    store_url: str,
    split: str | Sequence[str],
    classes: Sequence[str] | None,
    field: str,
    targets: frozenset[str] = frozenset({"single"}),
) -> Selection:
    """Rows of `split` whose class is in `classes` (all when None); `field` names the config for errors.

    `targets`: the store targets the caller's task trains on; a store of another kind is
    one line naming the task that can (task: multilabel / segmentation).
    """
    info = read_info(store_url)
    if info.target not in targets:
        hint = {"multi": "multilabel", "mask": "segmentation", "single": "classification"}[info.target]
        raise DataError(
            f"{field}: the data store holds {info.target} targets (data.source.layout.target: {info.target}), "
            f"which this task cannot train on; set task: {hint}"
        )
    table = read_table(store_url)
    names = info.class_names
    if info.target != "single":
        return _rows_with_targets(table, info.target, split, classes, names, field)
    if classes is None:
        wanted = list(names)
    else:
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise DataError(f"{field}: class '{unknown[0]}' is not in the data; classes are {', '.join(names)}")
        wanted = list(classes)
    splits = [split] if isinstance(split, str) else list(split)
    old_ids = [names.index(c) for c in wanted]
    mask = pc.and_(pc.is_in(table["split"], pa.array(splits)), pc.is_in(table["label"], pa.array(old_ids, pa.int32())))
    rows = table.filter(mask)
    remap = np.full(len(names), -1, dtype=np.int64)
    remap[old_ids] = np.arange(len(old_ids))
    labels = remap[rows["label"].to_numpy()]
    return Selection(images=rows["image"].combine_chunks(), labels=labels, class_names=wanted)


def _rows_with_targets(table, target, split, classes, names, field) -> Selection:
    """A multi-label or mask store's rows of `split`, every class kept (their targets say which)."""
    if classes is not None and list(classes) != list(names):
        raise DataError(f"{field}: a class filter needs a single-label store; this one holds {target} targets")
    splits = [split] if isinstance(split, str) else list(split)
    rows = table.filter(pc.is_in(table["split"], pa.array(splits)))
    return Selection(
        images=rows["image"].combine_chunks(),
        labels=np.full(rows.num_rows, -1, dtype=np.int64),
        class_names=list(names),
        targets=rows[TARGET_COLUMNS[target]].combine_chunks(),
        target=target,
    )


def require_classes(sel: Selection, split: str, field: str, minimum: int = 2) -> None:
    present = np.unique(sel.labels)
    if len(sel) == 0:
        raise DataError(f"{field}: the {split} split is empty for classes {', '.join(sel.class_names)}")
    if sel.target != "single":  # every class is a target of every image
        return
    if len(present) < minimum:
        raise DataError(
            f"{field}: the {split} split has {len(present)} class(es); training a classifier needs at least {minimum}"
        )


def per_class_subsample(sel: Selection, per_class: int, seed: int) -> Selection:
    """At most `per_class` rows of each class, the same ones for the same seed (stratified label budget)."""
    rng = np.random.default_rng(seed)
    keep = []
    for label in range(len(sel.class_names)):
        rows = np.flatnonzero(sel.labels == label)
        keep.append(np.sort(rng.permutation(rows)[:per_class]))
    idx = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return Selection(
        images=sel.images.take(pa.array(idx, pa.int64())), labels=sel.labels[idx], class_names=list(sel.class_names)
    )


def base_transform(image_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return v2.Resize((image_size, image_size), antialias=True)


def normalizer(mean: Sequence[float], std: Sequence[float], channels: int) -> v2.Transform:
    def per_channel(values: Sequence[float]) -> list[float]:
        return list(values) * channels if len(values) == 1 else list(values)

    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(per_channel(mean), per_channel(std))])


CACHE_BUDGET = 1 << 30  # bytes of decoded uint8 pixels `cache_decoded: auto` allows per split


def cache_fits(
    n: int, channels: int, image_size: int, setting: bool | str = "auto", budget: int = CACHE_BUDGET
) -> bool:
    """Whether to decode a split once into memory: `data.cache_decoded` true/false, or auto within `budget`."""
    if setting == "auto":
        return n * channels * image_size * image_size <= budget
    return bool(setting)


def auto_workers(setting: int | str, n: int, cpus: int | None = None, minimum: int = 1000) -> int:
    """`data.num_workers`: a number, or auto = min(4, CPUs − 1) when the split has `minimum` images, else 0."""
    if setting != "auto":
        return int(setting)
    import os

    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cpus - 1)) if n >= minimum else 0


def decode_resized(raw, mode: ImageReadMode, resize: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Encoded bytes → uint8 (C, S, S): torchvision's decoder in `mode`, then `resize`.

    The one decoding path of stored images and of images to predict (`graft predict`),
    so a file of a stored image gets exactly the pixels evaluation saw.
    """
    return resize(decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=mode))


class ArrowImageDataset(Dataset):
    """Decodes encoded images from an Arrow column; returns (image tensor, label).

    `cache=True` decodes and resizes every image once into one uint8 tensor (N,C,H,W),
    so later epochs cost indexing and augmentation only. The tensor lives in shared
    memory and is filled on first access, by whichever process reads an image first:
    the DataLoader workers decode the first epoch in parallel, while the model trains,
    instead of the training process decoding everything before the first step (that
    serial build was half of the input pipeline's cold-start time: docs/performance.md).
    Where shared memory is short, the cache is built at construction, as before.
    Without `normalize` the images stay uint8 (batch ops on the device convert and
    normalise them).
    """

    def __init__(
        self,
        sel: Selection,
        channels: int,
        image_size: int,
        sample_transforms: Sequence[Callable] = (),
        normalize: Callable | None = None,
        cache: bool = False,
    ):
        self.images = sel.images
        self.labels = torch.as_tensor(sel.labels, dtype=torch.long)
        self.mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
        self.resize = base_transform(image_size)
        self.augment = v2.Compose(list(sample_transforms)) if sample_transforms else None
        self.normalize = normalize
        self.cached: torch.Tensor | None = None
        self.filled: torch.Tensor | None = None  # which rows of a shared cache hold their image already
        if cache:
            shape = (len(self.labels), channels, image_size, image_size)
            if _shared_memory_fits(int(np.prod(shape)) + len(self.labels)):
                self.cached = torch.empty(shape, dtype=torch.uint8).share_memory_()
                self.filled = torch.zeros(len(self.labels), dtype=torch.bool).share_memory_()
            else:
                self.cached = torch.empty(shape, dtype=torch.uint8)
                for i in range(len(self.labels)):
                    self.cached[i] = self.decode_encoded(i)

    def __len__(self) -> int:
        return len(self.labels)

    def decode(self, i: int) -> torch.Tensor:
        """Image `i` as uint8 (C, image_size, image_size), from the cache when there is one."""
        if self.cached is None:
            return self.decode_encoded(i)
        if self.filled is not None and not self.filled[i]:
            self.cached[i] = self.decode_encoded(i)
            self.filled[i] = True  # after the pixels: a reader that sees the flag sees the image
        return self.cached[i]

    def decode_encoded(self, i: int) -> torch.Tensor:
        try:
            return decode_resized(self.images[i].as_buffer(), self.mode, self.resize)
        except RuntimeError as exc:
            raise DataError(f"image #{i} of the data store cannot be decoded: {exc}") from exc

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.decode(i)
        if self.augment is not None:
            image = self.augment(image)
        if self.normalize is not None:
            image = self.normalize(image)
        return image, self.labels[i]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A batch at once (DataLoader calls this): from the cache, one gather instead of N decodes."""
        if self.cached is None or self.augment is not None:
            return [self[i] for i in indices]
        index = torch.as_tensor(indices, dtype=torch.long)
        if self.filled is not None:
            for i in index[~self.filled[index]].tolist():
                self.decode(i)
        images, labels = self.cached[index], self.labels[index]
        if self.normalize is not None:
            images = self.normalize(images)
        return Gathered(images, labels)


class Gathered(list):
    """A batch gathered from the cache: the (image, label) pairs DataLoader expects, plus the stacked
    tensors they are views of, so `collate` hands those on instead of stacking the pairs again."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        super().__init__(zip(images.unbind(0), labels.unbind(0), strict=True))
        self.images, self.labels = images, labels


def collate(samples):
    """default_collate, except for a `Gathered` batch, which is stacked already."""
    if isinstance(samples, Gathered):
        return samples.images, samples.labels
    return default_collate(samples)


def _shared_memory_fits(nbytes: int, margin: float = 0.5) -> bool:
    """Whether a shared tensor of `nbytes` leaves `margin` of /dev/shm free (containers often have 64 MB)."""
    import os

    try:
        stat = os.statvfs("/dev/shm")
    except OSError:  # no /dev/shm (macOS, Windows): torch shares through files elsewhere
        return True
    return nbytes <= stat.f_bavail * stat.f_frsize * margin


class BatchCollate:
    """A collate_fn that runs batch ops in the DataLoader worker, right after collation.

    For CPU training: the "device" is the CPU, so batch ops run in the workers,
    in parallel with the training step, instead of in the training process.
    """

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, samples):
        images, labels = collate(samples)
        return self.transform(images, labels)


def forget_parent_exit_hooks(worker_id: int) -> None:
    """A DataLoader worker's `worker_init_fn`: drop the thread-exit hooks it inherited by fork.

    A worker is a forked copy of the training process. Hooks that the parent's
    threads registered with `threading._register_atexit` (Prefect's log and event
    services, once a flow has run in the process) are copied too, and at the
    worker's exit they run against state that only made sense in the parent:
    Prefect's fail an assertion, the worker exits with code 1, and torch raises
    "DataLoader worker exited unexpectedly" in the stage. The worker has none of
    those threads, so it has nothing of theirs to drain.
    """
    hooks = getattr(threading, "_threading_atexits", None)
    if hooks is not None:
        hooks.clear()


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    pin_memory: bool = False,
    drop_last: bool = False,
    shard: tuple[int, int] | None = None,
    prefetch_factor: int | None = None,
    persistent_workers: bool = True,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """`shard=(rank, world_size)` gives each process of a distributed stage its own part of every epoch.

    Workers are seeded from the loader's seeded generator, so the same `seed` gives the
    same batches and the same per-sample augmentations, with or without workers.
    """
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if shard is not None:
        sampler = DistributedSampler(
            dataset, num_replicas=shard[1], rank=shard[0], shuffle=shuffle, seed=seed, drop_last=drop_last
        )
    extra = {"prefetch_factor": prefetch_factor} if num_workers > 0 and prefetch_factor else {}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=forget_parent_exit_hooks if num_workers > 0 else None,
        generator=generator,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=num_workers > 0 and persistent_workers,
        collate_fn=collate if collate_fn is None else collate_fn,
        **extra,
    )
