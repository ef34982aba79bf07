"""What the training stages share: building models, loaders and augmentation policies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from core import storage
from core.checkpoint import META, WEIGHTS, load_into, read_weights
from core.config import PluginRef
from core.data.dataset import ArrowImageDataset, Selection, make_loader, normalizer, require_classes, select
from core.plugin_manager import PluginHost
from core.specs import LayerGroup
from core.stages.base import StageContext
from core.validation import plugin_params


def dataset_url(ctx: StageContext) -> str:
    """The store this run acquired (read from the acquire stage's output)."""
    return storage.read_json(str(ctx.input("acquire", "dataset")))["path"]


def build_model(host: PluginHost, meta: dict[str, Any]) -> nn.Module:
    family = host.families.get(meta["family"], "model.family")
    params = plugin_params(family, meta.get("params", {}), "model")
    return family.build(meta["variant"], num_classes=meta["num_classes"], in_chans=meta["in_chans"],
                        image_size=meta["image_size"], **params)


def model_meta(ctx: StageContext, class_names: Sequence[str]) -> dict[str, Any]:
    cfg = ctx.config
    return {"family": cfg.model.family, "variant": cfg.model.variant, "params": cfg.model.params,
            "num_classes": len(class_names), "class_names": list(class_names), "in_chans": cfg.data.channels,
            "image_size": cfg.data.image_size, "mean": cfg.data.mean, "std": cfg.data.std}


def layer_groups(host: PluginHost, family_name: str, model: nn.Module) -> list[LayerGroup]:
    from core.training.param_groups import check_partition

    groups = host.families.get(family_name).layer_groups(model)
    check_partition(model, groups, family_name)
    return groups


def head_keys(model: nn.Module, groups: Sequence[LayerGroup]) -> set[str]:
    """State-dict keys of the head: every key under a module that owns a head parameter."""
    prefixes = {p.rsplit(".", 1)[0] + "." for p in groups[-1].params} if groups and groups[-1].name == "head" else set()
    return {k for k in model.state_dict() if any(k.startswith(pre) for pre in prefixes)}


def load_trained(ctx: StageContext, stage: str = "finetune", name: str = "model") -> tuple[nn.Module, dict]:
    directory = ctx.input(stage, name)
    meta = storage.read_json(str(directory / META))
    model = build_model(ctx.host, meta)
    load_into(model, read_weights(str(directory / WEIGHTS)), drop=set(), source=f"{stage} checkpoint")
    return model, meta


def sample_transforms(host: PluginHost, refs: Sequence[PluginRef], section: str) -> tuple[list, list]:
    """Split a policy into per-sample transforms (DataLoader workers) and batch ops (on the device)."""
    per_sample, per_batch = [], []
    for i, ref in enumerate(refs):
        spec = host.augmentations.get(ref.name, f"{section}[{i}].name")
        op = spec.factory(**plugin_params(spec, ref.params, f"{section}[{i}]"))
        (per_batch if spec.placement == "batch" else per_sample).append(op)
    return per_sample, per_batch


def compose_batch(ops: Sequence[Callable]) -> Callable | None:
    if not ops:
        return None

    def apply(images: torch.Tensor, labels: torch.Tensor):
        for op in ops:
            images, labels = op(images, labels)
        return images, labels
    return apply


def task_loaders(ctx: StageContext, section: str, classes: Sequence[str] | None, batch_size: int | None,
                 min_classes: int = 2) -> tuple[DataLoader, DataLoader | None, Selection, Callable | None]:
    """Train loader (with the train augmentations) and val loader (eval transforms) for a class filter."""
    cfg = ctx.config
    url = dataset_url(ctx)
    train = select(url, "train", classes, f"{section}.classes")
    require_classes(train, "train", f"{section}.classes", min_classes)
    val = select(url, "val", train.class_names, f"{section}.classes")
    norm = normalizer(cfg.data.mean, cfg.data.std, cfg.data.channels)
    train_ops, batch_ops = sample_transforms(ctx.host, cfg.augment.train, "augment.train")
    eval_ops, _ = sample_transforms(ctx.host, cfg.augment.eval, "augment.eval")
    bs = batch_size or cfg.data.batch_size
    workers = cfg.data.num_workers
    train_ds = ArrowImageDataset(train, cfg.data.channels, cfg.data.image_size, train_ops, norm)
    train_loader = make_loader(train_ds, bs, True, workers, cfg.seed, ctx.policy.pin_memory,
                               drop_last=len(train_ds) > bs)
    val_loader = None
    if len(val):
        val_ds = ArrowImageDataset(val, cfg.data.channels, cfg.data.image_size, eval_ops, norm)
        val_loader = make_loader(val_ds, bs * 2, False, workers, cfg.seed, ctx.policy.pin_memory)
    return train_loader, val_loader, train, compose_batch(batch_ops)


def eval_loader(ctx: StageContext, split: str, class_names: Sequence[str], batch_size: int) -> tuple[DataLoader, Selection]:
    cfg = ctx.config
    sel = select(dataset_url(ctx), split, class_names, f"evaluate.split")
    eval_ops, _ = sample_transforms(ctx.host, cfg.augment.eval, "augment.eval")
    ds = ArrowImageDataset(sel, cfg.data.channels, cfg.data.image_size, eval_ops,
                           normalizer(cfg.data.mean, cfg.data.std, cfg.data.channels))
    return make_loader(ds, batch_size, False, cfg.data.num_workers, cfg.seed, ctx.policy.pin_memory), sel


def initial_weights(ctx: StageContext, model: nn.Module, groups: Sequence[LayerGroup]) -> dict | None:
    """Load `model.weights` (a local or fsspec file) into `model`, leaving its head as built."""
    url = ctx.config.model.weights
    if not url:
        return None
    return load_into(model, read_weights(url, "model.weights"), drop=head_keys(model, groups), source=url)
