"""Acquire: fetch the source and normalise it into the content-addressed Arrow store."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from core import storage
from core.data.dataset import ArrowImageDataset, select
from core.data.splits import stratified_split
from core.data.store import build_store, is_complete, read_info, store_key
from core.images import save_grid
from core.stages.base import Artifact, StageContext, StageResult
from core.validation import plugin_params

DATASET_FILE = "dataset.json"


def run(ctx: StageContext) -> StageResult:
    data = ctx.config.data
    source = ctx.host.sources.get(data.source.kind, "data.source.kind")
    params = plugin_params(source, data.source.params, "data.source")
    source.check(params)
    split = data.split.model_dump()
    key = store_key({"source": source.name, "params": params, "fingerprint": source.fingerprint(params),
                     "split": split})
    url = storage.join(data.cache_dir, key)
    if is_complete(url):
        info = read_info(url)
        info.cache_hit = True
    else:
        with tempfile.TemporaryDirectory(prefix="graft-acquire-") as workdir:
            info = build_store(source.load(params, Path(workdir)), url, split,
                               {"source": source.name, "params": params}, stratified_split)
    storage.write_json(str(ctx.out / DATASET_FILE), info.as_summary())
    sample = _sample_grid(ctx, url)
    counts = [{"class": name, "images": n} for name, n in info.class_counts.items()]
    return StageResult(
        outputs={"dataset": DATASET_FILE, **({"samples": sample} if sample else {})},
        summary={"data": info.as_summary()},
        artifacts=[
            Artifact("table", "dataset-classes", f"{info.rows} images, {len(info.class_names)} classes"
                     f" ({'cache hit' if info.cache_hit else 'new store'})", rows=counts),
            *([Artifact("image", "dataset-samples", "sample images", path=sample)] if sample else []),
        ],
    )


def _sample_grid(ctx: StageContext, url: str, per_class: int = 4) -> str | None:
    sel = select(url, ["train", "val", "test"], None, "data")
    dataset = ArrowImageDataset(sel, ctx.config.data.channels, ctx.config.data.image_size)
    picks = []
    for label in range(len(sel.class_names)):
        picks += np.flatnonzero(sel.labels == label)[:per_class].tolist()
    if not picks:
        return None
    images = [dataset.decode(i) for i in picks]
    save_grid(images, ctx.out / "samples.png", nrow=per_class)
    return "samples.png"

