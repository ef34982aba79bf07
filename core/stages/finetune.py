"""Fine-tune: head-only epochs with the body frozen, then the layer groups at their own LRs.

The optimizer is built once, with one group per layer group (input→head) at
its own LR (`lr: [lo, hi]` or `layer_decay`); phases only change
`requires_grad`, so schedules and optimizer state stay aligned. Each phase has
its own schedule, scaling every group by the same factor of its own base LR.
What happens each epoch is the callback list in `_callbacks`, in order.
"""

from __future__ import annotations

import copy
import functools
import logging

import torch

from graftflow.core import storage
from graftflow.core.config import head_only_epochs
from graftflow.core.images import save_training_curves
from graftflow.core.models.build import build_model, head_keys, layer_groups, model_meta
from graftflow.core.models.pretrained import load_report as weights_report
from graftflow.core.models.saved import load_weights_file
from graftflow.core.models.weights import META, WEIGHTS, extend_head, load_into, read_weights, save_model
from graftflow.core.pretrained_weights import PretrainedWeights, resolve_pretrained
from graftflow.core.stages.base import Artifact, StageContext, StageResult
from graftflow.core.stages.inputs import (
    checkpoint_url,
    incremental_selections,
    loaders_for,
    stage_loss,
    target_loaders,
    task_loaders,
)
from graftflow.core.tasks import finetune_loss, resolve_monitor, task_of
from graftflow.core.training.callbacks import Callbacks
from graftflow.core.training.checkpointing import Checkpointer
from graftflow.core.training.compile import compiled_forward
from graftflow.core.training.evaluation import TargetEntropy, Validation
from graftflow.core.training.freezing import BatchNormPolicy, FreezeSchedule
from graftflow.core.training.loop import History, Loop
from graftflow.core.training.losses import build_loss
from graftflow.core.training.methods import MethodContext, TargetBatches, TrainStep
from graftflow.core.training.param_groups import build_param_groups, group_lrs, make_optimizer
from graftflow.core.training.progress import EpochLog, EpochObservers
from graftflow.core.training.resume import Checkpoint
from graftflow.core.training.schedule import GroupScheduler
from graftflow.core.training.selection import BestEpoch, EarlyStopping, WeightEMA
from graftflow.core.validation import finetune_method, plugin_params

log = logging.getLogger("graft.stage")


def run(ctx: StageContext) -> StageResult:
    cfg, ft = ctx.config, ctx.config.finetune
    task = task_of(ctx.host, cfg)
    method = finetune_method(ctx.host, cfg)
    monitor = resolve_monitor(task, ft.monitor, ctx.host.methods.get(ft.method.name))  # its declared min/max
    old_classes = pretrained_classes(ctx) if ft.head == "extend" else []
    if old_classes:
        train_sel, val_sel = incremental_selections(ctx, old_classes, method.replay_per_class)
        train_loader, val_loader, batch_op = loaders_for(ctx, train_sel, val_sel, ft.batch_size)
    else:
        train_loader, val_loader, train_sel, batch_op = task_loaders(ctx, "finetune", ft.classes, ft.batch_size)
    meta = model_meta(cfg, train_sel.class_names)
    pretrained = pretrained_start(ctx)
    model = build_model(ctx.host, meta, pretrained=pretrained)
    groups = layer_groups(ctx.host, cfg.model.family, model, task.name)
    if pretrained is not None:
        load_report = weights_report(model, pretrained)
    else:
        load_report = starting_weights(ctx, model, groups, keep_head=len(old_classes))
    freeze_epochs = head_only_epochs(cfg, ctx.run.completed("pretrain"))  # unset: 1 only with weights to protect

    criterion = stage_loss(ctx, "finetune", finetune_loss(cfg, task), train_sel)
    lrs = group_lrs(ft.lr, len(groups), ft.layer_decay)
    opt_groups, records = build_param_groups(model, groups, lrs, ft.weight_decay)
    model = ctx.policy.prepare(model)
    criterion = criterion.to(ctx.policy.torch_device)
    target, target_val = _target_stream(ctx, method, ft.batch_size)
    method.setup(
        _method_context(
            ctx, method, model, meta, len(old_classes), target, (freeze_epochs + ft.epochs) * len(train_loader)
        )
    )
    opt_groups += method_param_groups(method, lrs[-1], ft.weight_decay)
    optimizer = make_optimizer(ft.optimizer, opt_groups, ft.momentum)
    train_step = TrainStep(model, criterion, method).to(ctx.policy.torch_device)
    step, compile_status = compiled_forward(ctx.parallel(train_step), cfg.compile)

    history = History()
    ema = WeightEMA(model, ft.ema) if ft.ema else None
    evaluated = ema.module if ema is not None else model  # what validation, selection and export see
    best = BestEpoch(evaluated, monitor)
    strategies = [
        target,
        FreezeSchedule(
            model, groups, head_only_phases=["finetune-head"], unfreeze=ft.unfreeze, head_only_done=freeze_epochs > 0
        ),
        BatchNormPolicy(model, ft.bn),
        ema,
        Validation(evaluated, val_loader, criterion, ctx.policy, task_validation(ctx, task))
        if val_loader is not None
        else None,
        TargetEntropy(evaluated, target_val, ctx.policy) if target_val is not None else None,
        method,
        best,
        EarlyStopping(best, ft.early_stopping) if ft.early_stopping else None,
        EpochLog(),
        EpochObservers(ctx.epoch_end),
    ]
    checkpoint = Checkpoint(
        Checkpointer(checkpoint_url(ctx), cfg.checkpoints.every_steps, cfg.checkpoints.keep),
        train_step,
        optimizer,
        history,
        strategies,
        writer=ctx.dist is None or ctx.dist.is_main,
        on_saved=ctx.checkpoint_written,
    )
    callbacks = Callbacks([*strategies, checkpoint])  # the checkpoint last: it saves what the others changed
    resumed_phase = checkpoint.restore()
    if resumed_phase is not None:
        log.info("finetune: resuming from the checkpoint at step %d", checkpoint.resumed_from_step)

    phases = [("finetune-head", freeze_epochs), ("finetune-all", ft.epochs)]
    for index, (phase, epochs) in enumerate(phases):
        if epochs == 0 or history.stopped_early or (resumed_phase is not None and index < resumed_phase):
            continue
        scheduler = GroupScheduler(
            optimizer,
            ft.schedule,
            epochs * len(train_loader),
            ft.warmup,
            monitor,
            ft.plateau_patience,
            ft.plateau_factor,
        )
        Loop(
            train_step,
            step,
            train_loader,
            optimizer,
            scheduler,
            ctx.policy,
            epochs,
            phase=phase,
            history=history,
            callbacks=callbacks,
            batch_transform=batch_op,
            phase_index=index,
            seed=cfg.seed,
        ).run()
    restored = ft.restore_best and best.restore_if_not_last(len(history.epochs))

    if task.calibrate is not None and val_loader is not None:  # e.g. multilabel thresholds tuned on val
        meta.update(task.calibrate(evaluated, val_loader, ctx.policy, meta))
    save_model(evaluated.cpu(), ctx.out / "model", meta)
    storage.write_json(str(ctx.out / "history.json"), history.epochs)
    curves = [save_training_curves(history.epochs, ctx.out / "curves.png", "fine-tuning")] if history.epochs else []
    checkpoint.clear()
    param_groups = [{"name": r.name, "lr": r.lr, "n_params": r.n_params} for r in records]
    last = history.epochs[-1] if history.epochs else {}
    final = next((e for e in history.epochs if e["epoch"] == best.best_epoch), last) if restored else last
    return StageResult(
        outputs={"model": "model", "history": "history.json"},
        summary={
            "param_groups": param_groups,
            "metrics": {"finetune": {k: v for k, v in final.items() if k not in ("epoch", "phase")}},
            "finetune": {
                "task": task.name,
                "classes": train_sel.class_names,
                "images": len(train_sel),
                "phases": [p.removeprefix("finetune-") for p, e in phases if e],
                "loss": criterion.name,
                "weights_load": load_report,
                "inputs": {k: meta[k] for k in ("in_chans", "image_size", "mean", "std")},
                "steps": history.steps,
                "epochs_run": len(history.epochs),
                "stopped_early": history.stopped_early,
                "best_epoch": best.best_epoch,
                "monitor": monitor.name,
                "monitor_mode": monitor.mode,
                "restored_best": restored,
                "ema": ft.ema,
                "lr_spread": _lr_spread(ft),
                "method": ft.method.name,
                "head": {"kind": ft.head, "old_classes": old_classes} if old_classes else {"kind": ft.head},
                "micro_batch": history.micro_batch,
                "oom_backoffs": history.oom_backoffs,
                "resumed_from_step": checkpoint.resumed_from_step,
            },
            "device": {"compiled": compile_status},
        },
        artifacts=[
            Artifact(
                "table", "param-groups", "learning rate per layer group (input → head), last phase", rows=param_groups
            ),
            Artifact(
                "table",
                "finetune-history",
                f"fine-tuning per epoch (train_loss and val_loss: {criterion.name})",
                rows=history.epochs,
            ),
            *[
                Artifact("image", "finetune-curves", "fine-tuning curves: loss and accuracy per epoch", path=c.name)
                for c in curves
            ],
        ],
    )


def task_validation(ctx: StageContext, task):
    """The task's validation with the task's parameters (`task:` in the config), as the loop calls it."""
    params = plugin_params(task, ctx.config.task.params, "task")
    return functools.partial(task.validate, **params)


def _lr_spread(ft) -> str:
    return "layer_decay" if ft.layer_decay else ("lo-hi" if isinstance(ft.lr, list) else "uniform")


def _has_backbone(ctx: StageContext) -> bool:
    summary = ctx.run.summary()
    return ctx.config.finetune.pretrained and summary.get("stages", {}).get("pretrain", {}).get("status") == "completed"


def pretrained_start(ctx: StageContext) -> PretrainedWeights | None:
    """`model.pretrained`, fetched, unless fine-tuning starts from this run's pretrain backbone."""
    if _has_backbone(ctx):
        return None
    family = ctx.host.families.get(ctx.config.model.family, "model.family")
    return resolve_pretrained(family, ctx.config.model.variant, ctx.config.model.pretrained)


def pretrained_classes(ctx: StageContext) -> list[str]:
    """The classes of the pretrain stage's head: the old classes an extended head keeps."""
    return list(storage.read_json(str(ctx.input("pretrain", "backbone") / META))["class_names"])


def _target_stream(ctx: StageContext, method, batch_size) -> tuple[TargetBatches | None, object | None]:
    """A domain-adaptation method's unlabelled target batches, and the target val loader for its entropy."""
    if not method.needs_target:
        return None, None
    train, val, batch_op = target_loaders(ctx, batch_size)
    return TargetBatches(train, ctx.policy, ctx.config.seed, batch_op), val


def _method_context(ctx: StageContext, method, model, meta, n_old: int, target, total_steps: int) -> MethodContext:
    family = ctx.host.families.get(ctx.config.model.family, "model.family")
    feature_dim = None
    if method.needs_features:
        size, channels = ctx.config.data.image_size, ctx.config.data.channels
        with torch.no_grad():
            feature_dim = family.split_forward(
                model.eval(), ctx.policy.to_device(torch.zeros(2, channels, size, size))
            )[0].shape[1]
    return MethodContext(
        model=model,
        num_classes=meta["num_classes"],
        total_steps=total_steps,
        device=ctx.policy.torch_device,
        split_forward=family.split_forward,
        feature_dim=feature_dim,
        old_classes=n_old,
        teacher=copy.deepcopy(model) if method.extends_head else None,
        target=target,
        make_loss=lambda ref, field: build_loss(ctx.host, ref, field),
    )


def method_param_groups(method, lr: float, weight_decay: float) -> list[dict]:
    """A method's own trainable parameters (a discriminator): one more group at the head's LR, "method"."""
    params = [p for p in method.parameters() if p.requires_grad]
    decay, no_decay = [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]
    return [
        {"params": subset, "lr": lr, "base_lr": lr, "weight_decay": wd, "layer_group": "method"}
        for subset, wd in ((decay, weight_decay), (no_decay, 0.0))
        if subset
    ]


def starting_weights(ctx: StageContext, model, groups, keep_head: int = 0) -> dict | None:
    """The pretrain stage's backbone when this run has one, else `model.weights`, else none (scratch).

    `keep_head`: the pretrained head's rows become the first `keep_head` rows of the
    model's head (`finetune.head: extend`); the rows after them start as built.
    """
    if _has_backbone(ctx):
        directory = ctx.input("pretrain", "backbone")
        meta = storage.read_json(str(directory / META))
        state = read_weights(str(directory / WEIGHTS))
        heads = set(meta.get("head_keys", [])) | head_keys(model, groups)
        rename = task_of(ctx.host, ctx.config).backbone_key
        if rename is not None:  # the backbone seeds the task's encoder under the encoder's own key names
            state = {new: v for k, v in state.items() if k not in heads and (new := rename(k)) is not None}
        report = load_into(model, state, drop=heads, source="pretrain backbone")
        if keep_head:
            report["head_rows_kept"] = extend_head(model, {k: v for k, v in state.items() if k in heads}, keep_head)
        return report
    return load_weights_file(ctx.config.model.weights, model, groups, task_of(ctx.host, ctx.config).backbone_key)
