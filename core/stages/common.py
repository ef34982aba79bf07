"""What the training stages share: building models, loaders and augmentation policies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch import nn
from torch.utils.data import DataLoader

from graftflow.core import storage
from graftflow.core.checkpoint import META, WEIGHTS, load_into, read_weights
from graftflow.core.config import PluginRef
from graftflow.core.data.dataset import (ArrowImageDataset, BatchCollate, Selection, auto_workers, cache_fits, make_loader, normalizer,
                               require_classes, select)
from graftflow.core.errors import ConfigError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import AugmentContext, LayerGroup, LossContext, LossSpec
from graftflow.core.stages.base import StageContext
from graftflow.core.validation import plugin_params


def dataset_url(ctx: StageContext, name: str = "dataset", materialized: bool = True) -> str:
    """The store this run acquired (read from the acquire stage's output `name`).

    With `augment.materialize` on and the augment stage completed, the main dataset is
    the store of augmented copies that stage wrote (its output "dataset") instead.
    """
    if name == "dataset" and materialized:
        url = materialized_url(ctx)
        if url is not None:
            return url
    return storage.read_json(str(ctx.input("acquire", name)))["path"]


def materialized_url(ctx: StageContext) -> str | None:
    """The augment stage's store of augmented copies, when `augment.materialize` is on and it was written."""
    if not ctx.config.augment.materialize:
        return None
    entry = ctx.run.summary().get("stages", {}).get("augment", {})
    if entry.get("status") != "completed" or "dataset" not in entry.get("outputs", {}):
        return None
    return storage.read_json(str(ctx.input("augment", "dataset")))["path"]


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
    from graftflow.core.training.param_groups import check_partition

    groups = host.families.get(family_name).layer_groups(model)
    check_partition(model, groups, family_name)
    return groups


def head_keys(model: nn.Module, groups: Sequence[LayerGroup]) -> set[str]:
    """State-dict keys of the head: every key under a module that owns a head parameter."""
    prefixes = {p.rsplit(".", 1)[0] + "." for p in groups[-1].params} if groups and groups[-1].name == "head" else set()
    return {k for k in model.state_dict() if any(k.startswith(pre) for pre in prefixes)}


def read_model(host: PluginHost, url: str, field: str) -> tuple[nn.Module, dict[str, Any]]:
    """A saved model from a directory with model.safetensors + model.json, or a .safetensors with model.json beside it."""
    base = url.rstrip("/")
    if base.endswith(".safetensors"):
        weights, meta_url = base, storage.join(base.rsplit("/", 1)[0] if "/" in base else ".", META)
    else:
        weights, meta_url = storage.join(base, WEIGHTS), storage.join(base, META)
    if not storage.exists(meta_url):
        raise ConfigError(f"{field}: '{url}' is not a saved model: {meta_url} is missing "
                          f"(give a run's finetune/model folder, or a .safetensors with model.json beside it)")
    meta = storage.read_json(meta_url)
    model = build_model(host, meta)
    load_into(model, read_weights(weights, field), drop=set(), source=field)
    return model, meta


def load_trained(ctx: StageContext, stage: str = "finetune", name: str = "model") -> tuple[nn.Module, dict]:
    directory = ctx.input(stage, name)
    meta = storage.read_json(str(directory / META))
    model = build_model(ctx.host, meta)
    load_into(model, read_weights(str(directory / WEIGHTS)), drop=set(), source=f"{stage} checkpoint")
    return model, meta


@dataclass
class AugmentPolicy:
    """A section of `augment` resolved: per-sample ops (workers) and batch ops (device), in order."""

    sample: list[Callable]
    batch: list[Callable]
    entries: list[dict[str, Any]]  # name, placement (resolved), params: for policy.json
    soft_targets: bool = False


def augment_policy(host: PluginHost, refs: Sequence[PluginRef], section: str, device_type: str = "cpu",
                   context: AugmentContext | None = None, training: bool = True,
                   baked: bool = False) -> AugmentPolicy:
    """Resolve each entry's placement and build its op.

    An entry may say `placement: sample|batch|auto` (default auto). auto runs an op on the
    device when the spec is batch-only, or when it has a batch form, the device is CUDA
    and every later entry runs batched too (batch ops run after all per-sample ops, so
    the order of the list is kept). Eval sections (`training=False`) run per sample only.
    `baked=True` (training on `augment.materialize`d copies): ops with a per-sample form
    are already in the images and are left out; batch-only ops (MixUp, CutMix) remain.
    """
    context = context or AugmentContext(num_classes=0, image_size=0, channels=0)
    resolved = []
    for i, ref in enumerate(refs):
        field = f"{section}[{i}]"
        spec = host.augmentations.get(ref.name, f"{field}.name")
        params = dict(ref.params)
        want = params.pop("placement", "auto")
        can_sample, can_batch = spec.placement == "sample", spec.placement == "batch" or spec.batch_factory is not None
        if want not in ("auto", "sample", "batch"):
            raise ConfigError(f"{field}.placement: expected auto, sample or batch, got {want!r}")
        if want == "sample" and not can_sample:
            raise ConfigError(f"{field}.placement: '{spec.name}' runs on whole batches only (placement batch)")
        if want == "batch" and not can_batch:
            raise ConfigError(f"{field}.placement: '{spec.name}' has no batch form; use placement sample")
        if not training and (want == "batch" or not can_sample):
            raise ConfigError(f"{field}: '{spec.name}' runs on training batches only; {section} runs per sample")
        resolved.append((field, spec, want, can_sample, can_batch, plugin_params(spec, params, field)))
    batch_tail = True  # every later entry runs batched
    places = [""] * len(resolved)
    for j in range(len(resolved) - 1, -1, -1):
        _, _, want, can_sample, can_batch, _ = resolved[j]
        if want == "auto":
            want = "batch" if not can_sample or (can_batch and device_type == "cuda" and batch_tail and training) \
                else "sample"
        places[j] = want
        batch_tail = batch_tail and want == "batch"
    first_batch = next((j for j, place in enumerate(places) if place == "batch"), len(places))
    for j in range(first_batch + 1, len(places)):
        if places[j] == "sample":
            field, spec = resolved[j][:2]
            raise ConfigError(f"{field}: '{spec.name}' runs per sample after batch op '{resolved[first_batch][1].name}'; "
                              f"batch ops run after every per-sample op: move it before them, or run it batched")
    policy = AugmentPolicy([], [], [])
    for (field, spec, _, can_sample, _, params), place in zip(resolved, places):
        if baked and can_sample:
            continue
        kwargs = dict(params, context=context) if spec.uses_context else params
        if place == "batch":
            op = (spec.factory if spec.placement == "batch" else spec.batch_factory)(**kwargs)
            policy.batch.append(op)
        else:
            policy.sample.append(spec.factory(**kwargs))
        policy.entries.append({"name": spec.name, "placement": place, **params})
        policy.soft_targets = policy.soft_targets or spec.soft_targets
    return policy


def sample_transforms(host: PluginHost, refs: Sequence[PluginRef], section: str) -> tuple[list, list]:
    """Split a policy into per-sample transforms (DataLoader workers) and batch ops (on the device)."""
    policy = augment_policy(host, refs, section, training=section.endswith("train"))
    return policy.sample, policy.batch


class BatchTransform:
    """The loop's `batch_transform`: uint8 batches → float [0, 1] → each op → `normalize` (picklable)."""

    def __init__(self, ops: Sequence[Callable], normalize: Callable | None = None):
        self.ops, self.normalize = list(ops), normalize

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        if not images.is_floating_point():
            images = images.float().div_(255)
        for op in self.ops:
            images, labels = op(images, labels)
        if self.normalize is not None:
            images = self.normalize(images)
        return images, labels


def compose_batch(ops: Sequence[Callable], normalize: Callable | None = None) -> Callable | None:
    return BatchTransform(ops, normalize) if ops else None


class BatchNormalize:
    """Normalise a float [0, 1] batch on whatever device it is on."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int):
        def per_channel(values: Sequence[float]) -> list[float]:
            return list(values) * channels if len(values) == 1 else list(values)
        self.mean = torch.tensor(per_channel(mean)).view(1, -1, 1, 1)
        self.std = torch.tensor(per_channel(std)).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.device)) / self.std.to(images.device)


batch_normalizer = BatchNormalize


def loader_settings(ctx: StageContext, n: int) -> dict[str, Any]:
    """Workers, prefetch, persistence and decoded caching for a split of `n` images."""
    data = ctx.config.data
    return {"num_workers": auto_workers(data.num_workers, n), "prefetch_factor": data.prefetch_factor,
            "persistent_workers": data.persistent_workers,
            "cache": cache_fits(n, data.channels, data.image_size, data.cache_decoded)}


def per_class_subsample(sel: Selection, per_class: int, seed: int) -> Selection:
    """At most `per_class` rows of each class, the same ones for the same seed (stratified label budget)."""
    rng = np.random.default_rng(seed)
    keep = []
    for label in range(len(sel.class_names)):
        rows = np.flatnonzero(sel.labels == label)
        keep.append(np.sort(rng.permutation(rows)[:per_class]))
    idx = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=np.int64)
    return Selection(images=sel.images.take(pa.array(idx, pa.int64())), labels=sel.labels[idx],
                     class_names=list(sel.class_names))


def task_loaders(ctx: StageContext, section: str, classes: Sequence[str] | None, batch_size: int | None,
                 min_classes: int = 2, store: str = "dataset",
                 ) -> tuple[DataLoader, DataLoader | None, Selection, Callable | None]:
    """Train loader (with the train augmentations) and val loader (eval transforms) for a class filter.

    `store` names the acquire output to read ("pretrain_dataset": a separate pretraining
    source, whose every split is used for training). `<section>.labels_per_class`,
    when the section has it set, keeps that many train images per class (seeded by `seed`).
    """
    cfg = ctx.config
    url = dataset_url(ctx, store)
    if store != "dataset":  # a source of its own: all of it is pretraining data
        train = select(url, ["train", "val", "test"], classes, f"{section}.classes")
        require_classes(train, "train", f"{section}.classes", min_classes)
        val = Selection(images=train.images.slice(0, 0), labels=train.labels[:0], class_names=train.class_names)
    else:
        train = select(url, "train", classes, f"{section}.classes")
        require_classes(train, "train", f"{section}.classes", min_classes)
        val = select(url, "val", train.class_names, f"{section}.classes")
    per_class = getattr(getattr(cfg, section, None), "labels_per_class", None)
    if per_class:
        train = per_class_subsample(train, per_class, cfg.seed)
    norm = normalizer(cfg.data.mean, cfg.data.std, cfg.data.channels)
    context = AugmentContext(num_classes=len(train.class_names), image_size=cfg.data.image_size,
                             channels=cfg.data.channels)
    baked = store == "dataset" and materialized_url(ctx) is not None
    train_policy = augment_policy(ctx.host, cfg.augment.train, "augment.train", ctx.policy.device_type, context,
                                  baked=baked)
    eval_ops = augment_policy(ctx.host, cfg.augment.eval, "augment.eval", context=context, training=False).sample
    bs = batch_size or cfg.data.batch_size
    # With batch ops, batches travel as uint8 (4× less to copy) and are normalised on the device after them.
    batch_norm = batch_normalizer(cfg.data.mean, cfg.data.std, cfg.data.channels) if train_policy.batch else None
    settings = loader_settings(ctx, len(train))
    train_ds = ArrowImageDataset(train, cfg.data.channels, cfg.data.image_size, train_policy.sample,
                                 None if batch_norm else norm, cache=settings.pop("cache"))
    shard = (ctx.dist.rank, ctx.dist.world_size) if ctx.dist is not None else None
    batch_op = compose_batch(train_policy.batch, batch_norm)
    collate = None
    if batch_op is not None and ctx.policy.device_type == "cpu" and settings["num_workers"] > 0:
        collate, batch_op = BatchCollate(batch_op), None  # the device is the CPU: run them in the workers
    train_loader = make_loader(train_ds, bs, True, seed=cfg.seed, pin_memory=ctx.policy.pin_memory,
                               drop_last=len(train_ds) > bs * (shard[1] if shard else 1), shard=shard,
                               collate_fn=collate, **settings)
    val_loader = None
    if len(val):
        settings = loader_settings(ctx, len(val))
        val_ds = ArrowImageDataset(val, cfg.data.channels, cfg.data.image_size, eval_ops, norm,
                                   cache=settings.pop("cache"))
        val_loader = make_loader(val_ds, bs * 2, False, seed=cfg.seed, pin_memory=ctx.policy.pin_memory, **settings)
    return train_loader, val_loader, train, batch_op


def eval_loader(ctx: StageContext, split: str, class_names: Sequence[str], batch_size: int,
                per_class: int | None = None) -> tuple[DataLoader, Selection]:
    """Eval-transformed images of `split` (at most `per_class` per class, seeded like fine-tuning's budget)."""
    cfg = ctx.config
    sel = select(dataset_url(ctx), split, class_names, f"evaluate.split")
    if per_class:
        sel = per_class_subsample(sel, per_class, cfg.seed)
    eval_ops, _ = sample_transforms(ctx.host, cfg.augment.eval, "augment.eval")
    settings = loader_settings(ctx, len(sel))
    ds = ArrowImageDataset(sel, cfg.data.channels, cfg.data.image_size, eval_ops,
                           normalizer(cfg.data.mean, cfg.data.std, cfg.data.channels), cache=settings.pop("cache"))
    return make_loader(ds, batch_size, False, seed=cfg.seed, pin_memory=ctx.policy.pin_memory, **settings), sel


def initial_weights(ctx: StageContext, model: nn.Module, groups: Sequence[LayerGroup]) -> dict | None:
    """Load `model.weights` (a local or fsspec file) into `model`, leaving its head as built."""
    url = ctx.config.model.weights
    if not url:
        return None
    return load_into(model, read_weights(url, "model.weights"), drop=head_keys(model, groups), source=url)


class StageLoss(nn.Module):
    """A configured loss as a stage calls it: `loss(output, target, inputs=None, **extra)`.

    Losses declared with `uses_inputs` also get the batch's input images (a
    distillation teacher runs on them); the others are called with two arguments.
    """

    def __init__(self, spec: LossSpec, module: nn.Module, field: str):
        super().__init__()
        self.spec_name, self.uses_inputs, self.field = spec.name, spec.uses_inputs, field
        self.inner = module

    def forward(self, output: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor | None = None,
                **extra: Any) -> torch.Tensor:
        """`extra` keywords go to the loss as they are (e.g. infonce's `negatives` from a MoCo queue)."""
        if self.uses_inputs:
            if inputs is None:
                raise ConfigError(f"{self.field}: loss '{self.spec_name}' needs the input images, "
                                  f"which this training step does not give it")
            return self.inner(output, target, inputs, **extra)
        return self.inner(output, target, **extra)


def build_loss(host: PluginHost, ref: PluginRef | dict, field: str, class_names: Sequence[str] = (),
               class_counts: Sequence[int] = (), inputs: dict[str, Any] | None = None) -> StageLoss:
    """The loss `ref` names, its params checked, with a `LossContext` for losses that ask for one."""
    ref = ref if isinstance(ref, PluginRef) else PluginRef.model_validate(dict(ref))
    spec = host.losses.get(ref.name, f"{field}.name")
    params = plugin_params(spec, ref.params, field)
    if spec.uses_context:
        params["context"] = LossContext(
            field=field, num_classes=len(class_names), class_names=list(class_names),
            class_counts=[int(c) for c in class_counts],
            make_loss=lambda inner, inner_field: build_loss(host, inner, inner_field, class_names, class_counts,
                                                            inputs),
            load_model=lambda url, model_field: read_model(host, url, model_field),
            inputs=dict(inputs or {}),
        )
    return StageLoss(spec, spec.factory(**params), field)


def stage_loss(ctx: StageContext, section: str, ref: PluginRef, sel: Selection, labelled: bool = True) -> StageLoss:
    """`build_loss` for a training stage: class names and counts from its train selection."""
    counts = np.bincount(sel.labels, minlength=len(sel.class_names)) if len(sel) and labelled else []
    data = ctx.config.data
    inputs = {"in_chans": data.channels, "image_size": data.image_size, "mean": data.mean, "std": data.std}
    return build_loss(ctx.host, ref, f"{section}.loss", sel.class_names if labelled else [], list(counts), inputs)


def checkpoint_url(ctx: StageContext) -> str:
    """Where a training stage keeps its resumable checkpoints: outside the stage's own (staged) folder."""
    return storage.join(ctx.run.url, "_checkpoints", ctx.stage)


def epoch_reseeder(loader: DataLoader, seed: int) -> Callable[[int], None]:
    """Each epoch's shuffle depends on (seed, epoch) alone, so a resumed run draws the same batches."""
    generator = loader.generator

    def reseed(epoch: int) -> None:
        if generator is not None:
            generator.manual_seed(seed * 1_000_003 + epoch)
    return reseed
