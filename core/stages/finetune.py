"""Fine-tune: head-only epochs with the body frozen, then every group at its own LR.

The optimizer is built once with one group per layer group (input→head) and
the LRs spread as configured; phase one freezes all but the head with
`requires_grad`, phase two unfreezes everything. Each phase has its own
schedule, scaling every group by the same factor of its own base LR.
"""

from __future__ import annotations

from core import storage
from core.checkpoint import META, WEIGHTS, load_into, read_weights, save_model
from core.stages.base import Artifact, StageContext, StageResult
from core.stages.common import build_model, head_keys, initial_weights, layer_groups, model_meta, task_loaders
from core.training.loop import History, accuracy_and_loss, train_epochs
from core.training.param_groups import build_param_groups, make_optimizer, set_trainable, spread_lrs
from core.training.schedule import GroupScheduler
from core.validation import plugin_params


def run(ctx: StageContext) -> StageResult:
    cfg, host = ctx.config, ctx.host
    ft = cfg.finetune
    train_loader, val_loader, train_sel, batch_op = task_loaders(ctx, "finetune", ft.classes, ft.batch_size)
    class_names = train_sel.class_names
    meta = model_meta(ctx, class_names)
    model = build_model(host, meta)
    groups = layer_groups(host, cfg.model.family, model)
    load_report = _starting_weights(ctx, model, groups)

    loss_spec = host.losses.get(ft.loss.name, "finetune.loss.name")
    criterion = loss_spec.factory(**plugin_params(loss_spec, ft.loss.params, "finetune.loss"))
    lrs = spread_lrs(ft.lr, len(groups))
    opt_groups, records = build_param_groups(model, groups, lrs, ft.weight_decay)
    model = ctx.policy.prepare(model)
    criterion = criterion.to(ctx.policy.torch_device)
    optimizer = make_optimizer(ft.optimizer, opt_groups, ft.momentum)

    def step(images, labels):
        return criterion(model(images), labels)

    validate = (lambda: accuracy_and_loss(model, val_loader, ctx.policy)) if val_loader is not None else None  # noqa: E731
    history = History()
    phases = [("head", {groups[-1].name}, ft.freeze_epochs), ("all", {g.name for g in groups}, ft.epochs)]
    for phase, trainable, epochs in phases:
        if epochs == 0:
            continue
        set_trainable(model, groups, trainable)
        scheduler = GroupScheduler(optimizer, ft.schedule, epochs * len(train_loader), ft.warmup)
        train_epochs(model, step, train_loader, optimizer, scheduler, ctx.policy, epochs, history=history,
                     phase=f"finetune-{phase}", batch_transform=batch_op, validate=validate,
                     on_epoch_end=ctx.epoch_end)
    set_trainable(model, groups, {g.name for g in groups})

    save_model(model.cpu(), ctx.out / "model", meta)
    storage.write_json(str(ctx.out / "history.json"), history.epochs)
    param_groups = [{"name": r.name, "lr": r.lr, "n_params": r.n_params} for r in records]
    last = history.epochs[-1] if history.epochs else {}
    return StageResult(
        outputs={"model": "model", "history": "history.json"},
        summary={
            "param_groups": param_groups,
            "metrics": {"finetune": {k: v for k, v in last.items() if k not in ("epoch", "phase")}},
            "finetune": {"classes": class_names, "images": len(train_sel), "phases": [p[0] for p in phases if p[2]],
                         "weights_load": load_report, "steps": history.steps},
        },
        artifacts=[
            Artifact("table", "param-groups", "learning rate per layer group (input → head), last phase",
                     rows=param_groups),
            Artifact("table", "finetune-history", "fine-tuning per epoch", rows=history.epochs),
        ],
    )


def _starting_weights(ctx: StageContext, model, groups) -> dict | None:
    """The pretrain stage's backbone when this run has one, else `model.weights`, else none (scratch)."""
    summary = ctx.run.summary()
    if ctx.config.finetune.pretrained and summary.get("stages", {}).get("pretrain", {}).get("status") == "completed":
        directory = ctx.input("pretrain", "backbone")
        meta = storage.read_json(str(directory / META))
        state = read_weights(str(directory / WEIGHTS))
        return load_into(model, state, drop=set(meta.get("head_keys", [])) | head_keys(model, groups),
                         source="pretrain backbone")
    return initial_weights(ctx, model, groups)
