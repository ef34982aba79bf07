"""Fine-tune: head-only epochs with the body frozen, then the layer groups at their own LRs.

The optimizer is built once, with one group per layer group (input→head) at
its own LR (`lr: [lo, hi]` or `layer_decay`); phases only change
`requires_grad`, so schedules and optimizer state stay aligned. Each phase has
its own schedule, scaling every group by the same factor of its own base LR.
"""

from __future__ import annotations

import logging

from graftflow.core import storage
from graftflow.core.models.weights import META, WEIGHTS, load_into, read_weights, save_model
from graftflow.core.images import save_training_curves
from graftflow.core.stages.base import Artifact, StageContext, StageResult
from graftflow.core.models.build import build_model, head_keys, layer_groups, model_meta
from graftflow.core.models.saved import load_weights_file
from graftflow.core.stages.inputs import checkpoint_url, stage_loss, task_loaders
from graftflow.core.training.loop import epoch_reseeder
from graftflow.core.training.checkpointing import Checkpointer
from graftflow.core.training.compile import compiled_forward
from graftflow.core.training.freezing import set_trainable, train_mode, unfrozen_groups
from graftflow.core.training.loop import History, accuracy_and_loss, train_epochs
from graftflow.core.training.param_groups import build_param_groups, group_lrs, make_optimizer
from graftflow.core.training.resume import TrainingState
from graftflow.core.training.schedule import GroupScheduler
from graftflow.core.training.selection import BestTracker, make_ema

log = logging.getLogger("graft.stage")


def run(ctx: StageContext) -> StageResult:
    cfg, host = ctx.config, ctx.host
    ft = cfg.finetune
    train_loader, val_loader, train_sel, batch_op = task_loaders(ctx, "finetune", ft.classes, ft.batch_size)
    class_names = train_sel.class_names
    meta = model_meta(ctx.config, class_names)
    model = build_model(host, meta)
    groups = layer_groups(host, cfg.model.family, model)
    load_report = starting_weights(ctx, model, groups)

    criterion = stage_loss(ctx, "finetune", ft.loss, train_sel)
    lrs = group_lrs(ft.lr, len(groups), ft.layer_decay)
    opt_groups, records = build_param_groups(model, groups, lrs, ft.weight_decay)
    model = ctx.policy.prepare(model)
    criterion = criterion.to(ctx.policy.torch_device)
    optimizer = make_optimizer(ft.optimizer, opt_groups, ft.momentum)
    ema = make_ema(model, ft.ema) if ft.ema else None
    evaluated = ema.module if ema is not None else model  # what validation, selection and export see
    best = BestTracker(ft.monitor)
    all_groups = {g.name for g in groups}

    forward, compile_status = compiled_forward(ctx.parallel(model), cfg.compile)

    def step(images, labels):
        return criterion(forward(images), labels, inputs=images)

    def validate() -> dict[str, float]:
        return accuracy_and_loss(evaluated, val_loader, ctx.policy) if val_loader is not None else {}

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        best.update(epoch, metrics, evaluated)
        ctx.epoch_end(epoch, metrics)

    history = History()
    phases = [("head", ft.freeze_epochs), ("all", ft.epochs)]
    state = TrainingState(Checkpointer(checkpoint_url(ctx), cfg.checkpoints.every_steps, cfg.checkpoints.keep),
                          model, optimizer, history, ema, best, writer=ctx.dist is None or ctx.dist.is_main)
    resumed = state.restore()
    if resumed is not None:
        log.info("finetune: resuming from the checkpoint at step %d", resumed.step)
    for index, (phase, epochs) in enumerate(phases):
        if epochs == 0 or history.stopped_early or (resumed is not None and index < resumed.phase):
            continue

        def before_epoch(index: int, phase: str = phase) -> dict:
            if phase == "head":
                trainable = {groups[-1].name}
            elif ft.unfreeze == "gradual":
                trainable = unfrozen_groups(groups, index, head_only_done=ft.freeze_epochs > 0)
            else:
                trainable = all_groups
            set_trainable(model, groups, trainable, ft.bn)
            train_mode(model, ft.bn)
            return {"trainable_groups": len(trainable)}

        scheduler = GroupScheduler(optimizer, ft.schedule, epochs * len(train_loader), ft.warmup, ft.monitor,
                                   ft.plateau_patience, ft.plateau_factor)
        position, rng_after_skip = None, None
        if resumed is not None and index == resumed.phase:
            scheduler.load_state_dict(resumed.scheduler)
            position = resumed.position
            if position.batch:
                rng_after_skip = resumed.restore_rng  # once the finished batches have been drawn again
            else:
                resumed.restore_rng()
        train_epochs(model, step, train_loader, optimizer, scheduler, ctx.policy, epochs, history=history,
                     phase=f"finetune-{phase}", batch_transform=batch_op, validate=validate,
                     on_epoch_end=on_epoch_end, before_epoch=before_epoch,
                     after_step=(lambda: ema.update_parameters(model)) if ema is not None else None,
                     should_stop=lambda: bool(ft.early_stopping) and best.since_best >= ft.early_stopping,
                     position=position, reseed=epoch_reseeder(train_loader, cfg.seed), restore_rng=rng_after_skip,
                     on_position=state.on_position(index, scheduler))
    set_trainable(model, groups, all_groups)
    restored = ft.restore_best and best.state is not None and best.best_epoch != len(history.epochs)
    if restored:
        best.restore(evaluated)

    save_model(evaluated.cpu(), ctx.out / "model", meta)
    storage.write_json(str(ctx.out / "history.json"), history.epochs)
    curves = [save_training_curves(history.epochs, ctx.out / "curves.png", "fine-tuning")] if history.epochs else []
    state.ckpt.clear()
    param_groups = [{"name": r.name, "lr": r.lr, "n_params": r.n_params} for r in records]
    last = history.epochs[-1] if history.epochs else {}
    final = next((e for e in history.epochs if e["epoch"] == best.best_epoch), last) if restored else last
    return StageResult(
        outputs={"model": "model", "history": "history.json"},
        summary={
            "param_groups": param_groups,
            "metrics": {"finetune": {k: v for k, v in final.items() if k not in ("epoch", "phase")}},
            "finetune": {"classes": class_names, "images": len(train_sel), "phases": [p for p, e in phases if e],
                         "weights_load": load_report, "steps": history.steps, "epochs_run": len(history.epochs),
                         "stopped_early": history.stopped_early, "best_epoch": best.best_epoch,
                         "monitor": ft.monitor, "restored_best": restored, "ema": ft.ema,
                         "lr_spread": "layer_decay" if ft.layer_decay else ("lo-hi" if isinstance(ft.lr, list) else "uniform"),
                         "micro_batch": history.micro_batch, "oom_backoffs": history.oom_backoffs,
                         "resumed_from_step": resumed.step if resumed is not None else None},
            "device": {"compiled": compile_status},
        },
        artifacts=[
            Artifact("table", "param-groups", "learning rate per layer group (input → head), last phase",
                     rows=param_groups),
            Artifact("table", "finetune-history", "fine-tuning per epoch", rows=history.epochs),
            *[Artifact("image", "finetune-curves", "fine-tuning curves: loss and accuracy per epoch",
                       path=c.name) for c in curves],
        ],
    )


def starting_weights(ctx: StageContext, model, groups) -> dict | None:
    """The pretrain stage's backbone when this run has one, else `model.weights`, else none (scratch)."""
    summary = ctx.run.summary()
    if ctx.config.finetune.pretrained and summary.get("stages", {}).get("pretrain", {}).get("status") == "completed":
        directory = ctx.input("pretrain", "backbone")
        meta = storage.read_json(str(directory / META))
        state = read_weights(str(directory / WEIGHTS))
        return load_into(model, state, drop=set(meta.get("head_keys", [])) | head_keys(model, groups),
                         source="pretrain backbone")
    return load_weights_file(ctx.config.model.weights, model, groups)
