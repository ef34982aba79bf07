"""What a stage reads: the run's data store as loaders, its trained model, and its loss.

Each helper takes the `StageContext`, so a stage says what it needs in one line
and the store, class filters, augmentation policy and device settings are
resolved the same way for every stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from torch import nn
from torch.utils.data import DataLoader

from graftflow.core import storage
from graftflow.core.config import PluginRef
from graftflow.core.data.augmentation import augment_policy, batch_normalizer, compose_batch, sample_transforms
from graftflow.core.data.dataset import (
    ArrowImageDataset,
    BatchCollate,
    Selection,
    auto_workers,
    cache_fits,
    make_loader,
    normalizer,
    per_class_subsample,
    require_classes,
    select,
)
from graftflow.core.errors import DataError
from graftflow.core.models.build import build_model
from graftflow.core.models.weights import META, WEIGHTS, load_into, read_weights
from graftflow.core.specs import AugmentContext
from graftflow.core.stages.base import StageContext
from graftflow.core.tasks import task_of
from graftflow.core.training.losses import StageLoss, build_loss


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


def load_trained(ctx: StageContext, stage: str = "finetune", name: str = "model") -> tuple[nn.Module, dict]:
    directory = ctx.input(stage, name)
    meta = storage.read_json(str(directory / META))
    model = build_model(ctx.host, meta)
    load_into(model, read_weights(str(directory / WEIGHTS)), drop=set(), source=f"{stage} checkpoint")
    return model, meta


def loader_settings(ctx: StageContext, n: int) -> dict[str, Any]:
    """Workers, prefetch, persistence and decoded caching for a split of `n` images."""
    data = ctx.config.data
    return {
        "num_workers": auto_workers(data.num_workers, n),
        "prefetch_factor": data.prefetch_factor,
        "persistent_workers": data.persistent_workers,
        "cache": cache_fits(n, data.channels, data.image_size, data.cache_decoded),
    }


def task_loaders(
    ctx: StageContext,
    section: str,
    classes: Sequence[str] | None,
    batch_size: int | None,
    min_classes: int = 2,
    store: str = "dataset",
) -> tuple[DataLoader, DataLoader | None, Selection, Callable | None]:
    """Train loader (with the train augmentations) and val loader (eval transforms) for a class filter.

    `store` names the acquire output to read ("pretrain_dataset": a separate pretraining
    source, whose every split is used for training). `<section>.labels_per_class`,
    when the section has it set, keeps that many train images per class (seeded by `seed`).
    """
    train, val = task_selections(ctx, section, classes, min_classes, store)
    baked = store == "dataset" and materialized_url(ctx) is not None
    dataset = task_of(ctx.host, ctx.config).dataset if section == "finetune" else ArrowImageDataset
    train_loader, val_loader, batch_op = loaders_for(ctx, train, val, batch_size, baked, dataset)
    return train_loader, val_loader, train, batch_op


def task_selections(
    ctx: StageContext, section: str, classes: Sequence[str] | None, min_classes: int = 2, store: str = "dataset"
) -> tuple[Selection, Selection]:
    """The train and val rows of a class filter (a separate pretraining source: all of it is train).

    Fine-tuning reads the stores its task trains on (`TaskSpec.store_targets`).
    """
    url = dataset_url(ctx, store)
    targets = _section_targets(ctx, section)
    if store != "dataset":  # a source of its own: all of it is pretraining data
        train = select(url, ["train", "val", "test"], classes, f"{section}.classes")
        require_classes(train, "train", f"{section}.classes", min_classes)
        val = Selection(images=train.images.slice(0, 0), labels=train.labels[:0], class_names=train.class_names)
    else:
        train = select(url, "train", classes, f"{section}.classes", targets)
        require_classes(train, "train", f"{section}.classes", min_classes)
        val = select(url, "val", train.class_names, f"{section}.classes", targets)
    per_class = getattr(getattr(ctx.config, section, None), "labels_per_class", None)
    if per_class:
        train = per_class_subsample(train, per_class, ctx.config.seed)
    if section != "finetune":
        train, val = images_only(train), images_only(val)
    return train, val


ANY_TARGET = frozenset({"single", "multi", "mask"})


def _section_targets(ctx: StageContext, section: str) -> frozenset[str]:
    """The store targets `section` reads: fine-tuning its task's; pretraining with a self-supervised pretext
    (no `needs_labels`: SimCLR, MoCo, SimMIM) any store, images only; a labelled pretext class labels."""
    if section == "finetune":
        return task_of(ctx.host, ctx.config).store_targets
    if section == "pretrain" and not ctx.host.pretexts.get(ctx.config.pretrain.pretext.name).needs_labels:
        return ANY_TARGET
    return frozenset({"single"})


def images_only(sel: Selection) -> Selection:
    """A multi-label or mask selection as unlabelled images (label -1, no targets): what a
    self-supervised pretext reads from such a store, so nothing downstream sees masks or label sets."""
    if sel.target == "single":
        return sel
    return Selection(images=sel.images, labels=np.full(len(sel), -1, dtype=np.int64), class_names=sel.class_names)


def incremental_selections(ctx: StageContext, old_classes: Sequence[str], replay: int) -> tuple[Selection, Selection]:
    """`finetune.head: extend`: new classes labelled after the old ones, plus `replay` exemplars per old class.

    The class list is old + new, so label i means the same class for the pretrained
    head and the extended one. Validation holds the new classes only: in
    class-incremental learning the old classes' data is gone, but for the exemplars.
    """
    ft = ctx.config.finetune
    new = [
        c
        for c in (ft.classes or select(dataset_url(ctx), "train", None, "finetune.classes").class_names)
        if c not in old_classes
    ]
    train, val = task_selections(ctx, "finetune", new)
    names = [*old_classes, *train.class_names]
    train, val = (offset_labels(sel, len(old_classes), names) for sel in (train, val))
    if replay:
        exemplars = per_class_subsample(
            select(dataset_url(ctx), "train", list(old_classes), "finetune.method.replay"), replay, ctx.config.seed
        )
        train = concat_selections(exemplars, train, names)
    return train, val


def loaders_for(
    ctx: StageContext,
    train: Selection,
    val: Selection,
    batch_size: int | None,
    baked: bool = False,
    dataset: Callable[..., Any] = ArrowImageDataset,
) -> tuple[DataLoader, DataLoader | None, Callable | None]:
    """Loaders over two selections with the run's augmentations, normalisation and device settings.

    `dataset` makes the torch dataset of (image, target) pairs: the task's (`TaskSpec.dataset`).
    """
    cfg = ctx.config
    norm = normalizer(cfg.data.mean, cfg.data.std, cfg.data.channels)
    context = AugmentContext(
        num_classes=len(train.class_names), image_size=cfg.data.image_size, channels=cfg.data.channels
    )
    # Batch ops of a mask task get the masks as labels: only those declaring `batch_masks` joint/image-only run so
    masks = train.target == "mask"
    train_policy = augment_policy(
        ctx.host, cfg.augment.train, "augment.train", ctx.policy.device_type, context, baked=baked, masks=masks
    )
    eval_ops = augment_policy(ctx.host, cfg.augment.eval, "augment.eval", context=context, training=False).sample
    bs = batch_size or cfg.data.batch_size
    # With batch ops, batches travel as uint8 (4× less to copy) and are normalised on the device after them.
    batch_norm = batch_normalizer(cfg.data.mean, cfg.data.std, cfg.data.channels) if train_policy.batch else None
    settings = loader_settings(ctx, len(train))
    train_ds = dataset(
        train,
        cfg.data.channels,
        cfg.data.image_size,
        train_policy.sample,
        None if batch_norm else norm,
        cache=settings.pop("cache"),
    )
    shard = (ctx.dist.rank, ctx.dist.world_size) if ctx.dist is not None else None
    batch_op = compose_batch(train_policy.batch, batch_norm)
    collate = None
    if batch_op is not None and ctx.policy.device_type == "cpu" and settings["num_workers"] > 0:
        collate, batch_op = BatchCollate(batch_op), None  # the device is the CPU: run them in the workers
    train_loader = make_loader(
        train_ds,
        bs,
        True,
        seed=cfg.seed,
        pin_memory=ctx.policy.pin_memory,
        drop_last=len(train_ds) > bs * (shard[1] if shard else 1),
        shard=shard,
        collate_fn=collate,
        **settings,
    )
    val_loader = None
    if len(val):
        settings = loader_settings(ctx, len(val))
        val_ds = dataset(val, cfg.data.channels, cfg.data.image_size, eval_ops, norm, cache=settings.pop("cache"))
        val_loader = make_loader(val_ds, bs * 2, False, seed=cfg.seed, pin_memory=ctx.policy.pin_memory, **settings)
    return train_loader, val_loader, batch_op


def target_loaders(ctx: StageContext, batch_size: int | None) -> tuple[DataLoader, DataLoader | None, Callable | None]:
    """The unlabelled target domain (`finetune.method.target`): its train rows for training, val rows for entropy.

    The labels are replaced by zeros here, before any loader sees them, so whatever the
    target store holds as classes can never reach a training step.
    """
    url = dataset_url(ctx, "target_dataset")
    unlabelled = [unlabel(select(url, split, None, "finetune.method.target")) for split in ("train", "val")]
    if not len(unlabelled[0]):
        raise DataError("finetune.method.target: the target domain has no training images")
    return loaders_for(ctx, *unlabelled, batch_size)


def unlabel(sel: Selection) -> Selection:
    return Selection(images=sel.images, labels=np.zeros(len(sel), dtype=np.int64), class_names=["unlabelled"])


def offset_labels(sel: Selection, offset: int, class_names: Sequence[str]) -> Selection:
    return Selection(images=sel.images, labels=sel.labels + offset, class_names=list(class_names))


def concat_selections(first: Selection, second: Selection, class_names: Sequence[str]) -> Selection:
    images = pa.concat_arrays([first.images, second.images])
    return Selection(images=images, labels=np.concatenate([first.labels, second.labels]), class_names=list(class_names))


def eval_loader(
    ctx: StageContext,
    split: str,
    class_names: Sequence[str] | None,
    batch_size: int,
    per_class: int | None = None,
    store: str = "dataset",
) -> tuple[DataLoader, Selection]:
    """Eval-transformed images of `split` (at most `per_class` per class, seeded like fine-tuning's budget).

    `store` names the acquire output to read ("target_dataset": a method's target domain). The main
    store is read as the task reads it (its targets and `TaskSpec.dataset`).
    """
    cfg = ctx.config
    task = task_of(ctx.host, cfg) if store == "dataset" else None
    targets = task.store_targets if task is not None else frozenset({"single"})
    sel = select(dataset_url(ctx, store), split, class_names, "evaluate.split", targets)
    if per_class:
        sel = per_class_subsample(sel, per_class, cfg.seed)
    eval_ops, _ = sample_transforms(ctx.host, cfg.augment.eval, "augment.eval")
    settings = loader_settings(ctx, len(sel))
    ds = (task.dataset if task is not None else ArrowImageDataset)(
        sel,
        cfg.data.channels,
        cfg.data.image_size,
        eval_ops,
        normalizer(cfg.data.mean, cfg.data.std, cfg.data.channels),
        cache=settings.pop("cache"),
    )
    return make_loader(ds, batch_size, False, seed=cfg.seed, pin_memory=ctx.policy.pin_memory, **settings), sel


def stage_loss(ctx: StageContext, section: str, ref: PluginRef, sel: Selection, labelled: bool = True) -> StageLoss:
    """`build_loss` for a training stage: class names and counts from its train selection."""
    counts = class_counts(sel) if len(sel) and labelled else []
    data = ctx.config.data
    inputs = {"in_chans": data.channels, "image_size": data.image_size, "mean": data.mean, "std": data.std}
    return build_loss(ctx.host, ref, f"{section}.loss", sel.class_names if labelled else [], list(counts), inputs)


def class_counts(sel: Selection) -> list[int]:
    """Training images per class: of its label (single-label) or having it in its targets (label sets)."""
    if sel.target == "multi":
        flat = pc.list_flatten(sel.targets).to_numpy(zero_copy_only=False)
        return np.bincount(flat, minlength=len(sel.class_names)).tolist()
    if sel.target != "single":
        return []
    return np.bincount(sel.labels, minlength=len(sel.class_names)).tolist()


def checkpoint_url(ctx: StageContext) -> str:
    """Where a training stage keeps its resumable checkpoints: outside the stage's own (staged) folder."""
    return storage.join(ctx.run.url, "_checkpoints", ctx.stage)
