"""Augment: validate the augmentation policy and show it before an epoch is spent."""

from __future__ import annotations

import numpy as np
import torch

from core import storage
from core.data.dataset import ArrowImageDataset, select
from core.images import save_grid
from core.stages.base import Artifact, StageContext, StageResult
from core.stages.common import dataset_url, sample_transforms
from core.validation import plugin_params


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config
    policy = {}
    for section in ("train", "eval"):
        refs = getattr(cfg.augment, section)
        entries = []
        for i, ref in enumerate(refs):
            spec = ctx.host.augmentations.get(ref.name, f"augment.{section}[{i}].name")
            params = plugin_params(spec, ref.params, f"augment.{section}[{i}]")
            entries.append({"name": spec.name, "placement": spec.placement, **params})
        policy[section] = entries
    storage.write_json(str(ctx.out / "policy.json"), policy)
    outputs = {"policy": "policy.json"}
    artifacts = [Artifact("table", "augmentation-policy", "training augmentations, in order",
                          rows=[{"op": e["name"], "runs": e["placement"],
                                 "params": ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("name", "placement"))}
                                for e in policy["train"]] or [{"op": "(none)", "runs": "-", "params": "-"}])]
    if cfg.augment.preview:
        preview = _preview(ctx, cfg.augment.preview)
        outputs["preview"] = preview
        artifacts.append(Artifact("image", "augmentation-preview",
                                  "top row: originals; rows below: augmented samples of the same images", path=preview))
    return StageResult(outputs=outputs, summary={"augment": policy}, artifacts=artifacts)


def _preview(ctx: StageContext, n: int, rows: int = 3) -> str:
    cfg = ctx.config
    sel = select(dataset_url(ctx), "train", cfg.finetune.classes, "finetune.classes")
    plain = ArrowImageDataset(sel, cfg.data.channels, cfg.data.image_size)
    ops, _ = sample_transforms(ctx.host, cfg.augment.train, "augment.train")
    augmented = ArrowImageDataset(sel, cfg.data.channels, cfg.data.image_size, ops)
    picks = np.random.default_rng(cfg.seed).choice(len(sel), size=min(n, len(sel)), replace=False).tolist()
    torch.manual_seed(cfg.seed)
    images = [plain.decode(i) for i in picks]
    for _ in range(rows):
        images += [augmented[i][0] for i in picks]
    save_grid(images, ctx.out / "preview.png", nrow=len(picks))
    return "preview.png"
