"""Augment: validate the augmentation policy, show it before an epoch is spent, optionally materialise it.

- policy.json: every entry of `augment.train` / `augment.eval` with its parameters
  (defaults filled) and where it runs (sample in workers / batch on the device).
- preview.png: the top row holds originals, each row below the same images augmented
  (per-sample ops, then batch ops, MixUp/CutMix included), seeded by `seed`.
- `augment.materialize: K`: K augmented copies of every train image (per-sample forms of
  the ops; MixUp/CutMix stay online) plus the untouched val/test rows, written to a new
  content-addressed Arrow store; later stages train on it (`dataset` output).
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch
from torchvision.io import encode_png

from graftflow.core import storage
from graftflow.core.data.augmentation import augment_policy
from graftflow.core.data.dataset import ArrowImageDataset, select
from graftflow.core.data.store import build_store, is_complete, read_info, read_table, store_key
from graftflow.core.images import overlay_masks, save_grid
from graftflow.core.specs import AugmentContext, ImageRecord
from graftflow.core.stages.base import Artifact, StageContext, StageResult
from graftflow.core.stages.inputs import dataset_url

log = logging.getLogger("graft.augment")


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config
    policy = {
        "train": augment_policy(ctx.host, cfg.augment.train, "augment.train", ctx.policy.device_type).entries,
        "eval": augment_policy(ctx.host, cfg.augment.eval, "augment.eval", training=False).entries,
    }
    storage.write_json(str(ctx.out / "policy.json"), policy)
    outputs = {"policy": "policy.json"}
    artifacts = [
        Artifact(
            "table",
            "augmentation-policy",
            "training augmentations, in order",
            rows=[
                {
                    "op": e["name"],
                    "runs": e["placement"],
                    "params": ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("name", "placement")),
                }
                for e in policy["train"]
            ]
            or [{"op": "(none)", "runs": "-", "params": "-"}],
        )
    ]
    summary: dict = {"augment": policy}
    if cfg.augment.preview:
        preview = _preview(ctx, cfg.augment.preview)
        outputs["preview"] = preview
        artifacts.append(
            Artifact(
                "image",
                "augmentation-preview",
                "top row: originals; rows below: augmented samples of the same images",
                path=preview,
            )
        )
    if cfg.augment.materialize:
        info = materialize(ctx, cfg.augment.materialize)
        storage.write_json(str(ctx.out / "dataset.json"), info)
        outputs["dataset"] = "dataset.json"
        summary["augment"] = {
            **policy,
            "materialized": {k: info[k] for k in ("path", "copies", "rows", "split_counts", "source", "cache_hit")},
        }
    return StageResult(outputs=outputs, summary=summary, artifacts=artifacts)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return images if images.dtype == torch.uint8 else (images.clamp(0, 1) * 255).round().to(torch.uint8)


def _preview(ctx: StageContext, n: int, rows: int = 3) -> str:
    cfg = ctx.config
    url = dataset_url(ctx, materialized=False)
    sel = select(url, "train", cfg.finetune.classes, "finetune.classes", frozenset({"single", "multi", "mask"}))
    if sel.target == "mask":
        return _mask_preview(ctx, sel, n, rows)
    plain = ArrowImageDataset(sel, cfg.data.channels, cfg.data.image_size)
    context = AugmentContext(len(sel.class_names), cfg.data.image_size, cfg.data.channels)
    policy = augment_policy(ctx.host, cfg.augment.train, "augment.train", "cpu", context)
    augmented = ArrowImageDataset(sel, cfg.data.channels, cfg.data.image_size, policy.sample)
    picks = np.random.default_rng(cfg.seed).choice(len(sel), size=min(n, len(sel)), replace=False).tolist()
    torch.manual_seed(cfg.seed)
    images = [plain.decode(i) for i in picks]
    labels = torch.as_tensor(sel.labels[picks], dtype=torch.long)
    for _ in range(rows):
        batch = [augmented[i][0] for i in picks]
        if policy.batch and len({tuple(b.shape) for b in batch}) == 1:
            x = torch.stack(batch).float() / 255
            y = labels
            for op in policy.batch:
                x, y = op(x, y)
            batch = list(_to_uint8(x).unbind(0))
        images += [_to_uint8(b) for b in batch]
    if len({tuple(i.shape) for i in images}) > 1:  # a crop to another size: show everything at that size
        from torchvision.transforms import v2

        size = images[-1].shape[-2:]
        images = [v2.functional.resize(i, list(size), antialias=True) for i in images]
    save_grid(images, ctx.out / "preview.png", nrow=len(picks))
    return "preview.png"


def _mask_preview(ctx: StageContext, sel, n: int, rows: int) -> str:
    """A mask store's preview: each image with its masks overlaid, then `rows` augmented versions of both
    (the sample ops run on image and mask together, as training sees them)."""
    from graftflow.core.data.masks import MaskDataset

    cfg = ctx.config
    context = AugmentContext(len(sel.class_names), cfg.data.image_size, cfg.data.channels)
    policy = augment_policy(ctx.host, cfg.augment.train, "augment.train", "cpu", context)
    plain = MaskDataset(sel, cfg.data.channels, cfg.data.image_size)
    augmented = MaskDataset(sel, cfg.data.channels, cfg.data.image_size, policy.sample)
    picks = np.random.default_rng(cfg.seed).choice(len(sel), size=min(n, len(sel)), replace=False).tolist()
    torch.manual_seed(cfg.seed)
    tiles = [overlay_masks(*plain[i]) for i in picks]
    for _ in range(rows):
        tiles += [overlay_masks(*augmented[i]) for i in picks]
    save_grid(tiles, ctx.out / "preview.png", nrow=len(picks))
    return "preview.png"


def materialize(ctx: StageContext, copies: int) -> dict:
    """K augmented copies of the train split plus the untouched val/test rows, as a new content-addressed store."""
    cfg = ctx.config
    source_url = dataset_url(ctx, materialized=False)
    source = read_info(source_url)
    policy = augment_policy(ctx.host, cfg.augment.train, "augment.train", "cpu")  # per-sample forms of every op
    url = storage.join(
        cfg.data.store_root,
        store_key(
            {
                "materialized_from": source_url,
                "copies": copies,
                "policy": policy.entries,
                "seed": cfg.seed,
                "image_size": cfg.data.image_size,
                "channels": cfg.data.channels,
            }
        ),
    )
    cache_hit = is_complete(url)
    if cache_hit:
        info = read_info(url)
        log.info("augment.materialize: store %s reused (same source, policy and seed)", url)
    else:
        keep = _KeepSplits()
        info = build_store(
            _records(ctx, source_url, source.class_names, copies, policy.sample, keep),
            url,
            {"val": 0, "test": 0, "seed": cfg.seed},
            {"source": "augment.materialize", "from": source_url, "copies": copies, "policy": policy.entries},
            keep,
        )
    return {**info.as_summary(), "copies": copies, "source": source_url, "cache_hit": cache_hit}


class _KeepSplits:
    """A split function that keeps each row's split as the records said (by content hash)."""

    def __init__(self):
        self.by_hash: dict[str, str] = {}

    def __call__(self, labels, hashes, val, test, seed) -> list[str]:
        return [self.by_hash[h] for h in hashes]


def _records(ctx: StageContext, url: str, class_names: list[str], copies: int, ops: list, keep: _KeepSplits):
    """val/test rows as they are, then `copies` passes over the train rows through the per-sample ops (PNG)."""
    cfg = ctx.config
    table = read_table(url)
    splits = table["split"].to_pylist()
    labels = table["label"].to_pylist()
    sources = table["source"].to_pylist()
    images = table["image"].combine_chunks()

    def record(data: bytes, label: int, source: str, split: str) -> ImageRecord:
        keep.by_hash.setdefault(hashlib.sha256(data).hexdigest(), split)
        return ImageRecord(image=data, label=class_names[label], source=source)

    train_rows = [i for i, split in enumerate(splits) if split == "train"]
    for i, split in enumerate(splits):
        if split != "train":
            yield record(images[i].as_py(), labels[i], sources[i], split)
    sel = select(url, "train", None, "augment.materialize")
    dataset = ArrowImageDataset(sel, cfg.data.channels, cfg.data.image_size, ops)
    torch.manual_seed(cfg.seed)
    for k in range(copies):
        for j, i in enumerate(train_rows):
            image = _to_uint8(dataset[j][0])
            yield record(encode_png(image).numpy().tobytes(), labels[i], f"{sources[i]}#augment-{k}", "train")
