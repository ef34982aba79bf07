"""lr-find: the LR range test on the fine-tuning task, from the weights fine-tuning would start with.

Not part of the transfer chain; it writes only `lr-find/` (plot + JSON) and
never changes another stage's weights.
"""

from __future__ import annotations

from graftflow.core import storage
from graftflow.core.models.build import build_model, layer_groups, model_meta
from graftflow.core.stages.base import Artifact, StageContext, StageResult
from graftflow.core.stages.finetune import starting_weights
from graftflow.core.stages.inputs import task_loaders
from graftflow.core.training.freezing import set_trainable, train_mode
from graftflow.core.training.lr_finder import lr_range_test, save_plot
from graftflow.core.training.param_groups import build_param_groups, group_lrs, make_optimizer
from graftflow.core.validation import plugin_params


def run(ctx: StageContext) -> StageResult:
    cfg, host = ctx.config, ctx.host
    ft, rt = cfg.finetune, cfg.finetune.lr_find
    train_loader, _, train_sel, batch_op = task_loaders(ctx, "finetune", ft.classes, ft.batch_size)
    model = build_model(host, model_meta(ctx.config, train_sel.class_names))
    groups = layer_groups(host, cfg.model.family, model)
    load_report = starting_weights(ctx, model, groups)
    loss_spec = host.losses.get(ft.loss.name, "finetune.loss.name")
    criterion = loss_spec.factory(**plugin_params(loss_spec, ft.loss.params, "finetune.loss"))
    opt_groups, _ = build_param_groups(model, groups, group_lrs(ft.lr, len(groups), ft.layer_decay), ft.weight_decay)
    model = ctx.policy.prepare(model)
    criterion = criterion.to(ctx.policy.torch_device)
    optimizer = make_optimizer(ft.optimizer, opt_groups, ft.momentum)
    set_trainable(model, groups, {g.name for g in groups}, ft.bn)
    train_mode(model, ft.bn)

    def step(x, y):
        if batch_op is not None:  # batch augmentations (and normalisation) run on the device, as in training
            x, y = batch_op(x, y)
        return criterion(model(x), y)

    result = lr_range_test(model, step, train_loader, optimizer, ctx.policy, start=rt.start, end=rt.end, steps=rt.steps)
    hints = result.suggestions()
    suggested = hints.get("steepest", rt.start)
    save_plot(result, ctx.out / "lr_find.png", suggested)
    record = {
        "suggested_lr": suggested,
        **hints,
        "start_weights": (load_report or {}).get("source", "scratch"),
        "points": len(result.lrs),
        "lrs": result.lrs,
        "losses": result.losses,
    }
    storage.write_json(str(ctx.out / "lr_find.json"), record)
    return StageResult(
        outputs={"plot": "lr_find.png", "result": "lr_find.json"},
        summary={"lr_find": {k: v for k, v in record.items() if k not in ("lrs", "losses")}},
        artifacts=[
            Artifact("image", "lr-find", f"LR range test: suggested head LR {suggested:.2e}", path="lr_find.png")
        ],
    )
