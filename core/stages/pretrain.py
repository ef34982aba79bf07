"""Pretrain: learn a backbone with a pretext task, then hand it to fine-tuning.

The whole pretext module trains and checkpoints (projection heads, decoders, a
momentum encoder and its queue included), so a killed pretraining resumes to
the same weights; only its `backbone` is handed on.
"""

from __future__ import annotations

import logging

from graftflow.core import storage
from graftflow.core.config import PluginRef, pretrains
from graftflow.core.images import save_training_curves
from graftflow.core.models.build import head_keys, layer_groups, model_meta
from graftflow.core.models.pretrained import load_report as weights_report
from graftflow.core.models.pretrained import with_pretrained
from graftflow.core.models.saved import load_weights_file
from graftflow.core.models.weights import save_model
from graftflow.core.pretrained_weights import resolve_pretrained
from graftflow.core.specs import PretextContext
from graftflow.core.stages.base import Artifact, StageContext, StageResult
from graftflow.core.stages.inputs import checkpoint_url, stage_loss, task_loaders
from graftflow.core.training.callbacks import Callbacks
from graftflow.core.training.checkpointing import Checkpointer
from graftflow.core.training.evaluation import Validation
from graftflow.core.training.loop import History, Loop
from graftflow.core.training.param_groups import build_param_groups, group_lrs, make_optimizer
from graftflow.core.training.progress import EpochLog, EpochObservers
from graftflow.core.training.resume import Checkpoint
from graftflow.core.training.schedule import GroupScheduler
from graftflow.core.validation import plugin_params

log = logging.getLogger("graft.stage")


def run(ctx: StageContext) -> StageResult:
    cfg, host = ctx.config, ctx.host
    pre = cfg.pretrain
    if not pretrains(cfg):
        return StageResult(status="skipped", summary={"pretrain": {"skipped": True}})
    pretext = host.pretexts.get(pre.pretext.name, "pretrain.pretext")
    family = host.families.get(cfg.model.family, "model.family")
    min_classes = 2 if pretext.needs_labels else 1
    store = "pretrain_dataset" if pre.source is not None else "dataset"
    train_loader, val_loader, train_sel, batch_op = task_loaders(
        ctx, "pretrain", pre.classes, pre.batch_size, min_classes, store=store
    )
    class_names = train_sel.class_names
    loss_ref = pre.loss or (PluginRef(name=pretext.default_loss) if pretext.default_loss else None)
    make_loss = None
    if pretext.loss_kind is not None and loss_ref is not None:
        make_loss = lambda: stage_loss(ctx, "pretrain", loss_ref, train_sel, pretext.needs_labels)  # noqa: E731
    pretrained = resolve_pretrained(family, cfg.model.variant, cfg.model.pretrained)
    pctx = PretextContext(
        family=with_pretrained(family, pretrained),  # the backbone starts from model.pretrained when set
        variant=cfg.model.variant,
        model_params=plugin_params(family, cfg.model.params, "model"),
        in_chans=cfg.data.channels,
        image_size=cfg.data.image_size,
        num_classes=len(class_names) if pretext.needs_labels else 0,
        make_loss=make_loss,
    )
    module = pretext.build(pctx, **plugin_params(pretext, pre.pretext.params, "pretrain.pretext"))
    backbone = module.backbone
    groups = layer_groups(host, family.name, backbone)
    if pretrained is not None:
        load_report = weights_report(backbone, pretrained)
    else:
        load_report = load_weights_file(cfg.model.weights, backbone, groups)
    lrs = group_lrs(pre.lr, len(groups), pre.layer_decay)
    opt_groups, records = build_param_groups(backbone, groups, lrs, pre.weight_decay)
    backbone_ids = {id(p) for p in backbone.parameters()}
    extra = [(n, p) for n, p in module.named_parameters() if id(p) not in backbone_ids and p.requires_grad]
    # Projection heads, decoders, mask tokens: trained at the last group's LR, no decay on biases,
    # norms and the module's `no_weight_decay()` names (a momentum encoder has requires_grad=False).
    skip = set(module.no_weight_decay()) if hasattr(module, "no_weight_decay") else set()
    decay = [p for n, p in extra if p.ndim > 1 and n not in skip]
    no_decay = [p for n, p in extra if p.ndim <= 1 or n in skip]
    for subset, wd in ((decay, pre.weight_decay), (no_decay, 0.0)):
        if subset:
            opt_groups.append(
                {"params": subset, "lr": lrs[-1], "base_lr": lrs[-1], "weight_decay": wd, "layer_group": "pretext"}
            )
    module = ctx.policy.prepare(module)
    optimizer = make_optimizer(pre.optimizer, opt_groups, pre.momentum)
    scheduler = GroupScheduler(optimizer, pre.schedule, pre.epochs * len(train_loader), pre.warmup)
    validation = None
    if pretext.needs_labels and val_loader is not None:
        validation = Validation(backbone, val_loader, make_loss().to(ctx.policy.torch_device), ctx.policy)
    history = History()
    strategies = [validation, EpochLog(), EpochObservers(ctx.epoch_end)]
    checkpoint = Checkpoint(
        Checkpointer(checkpoint_url(ctx), cfg.checkpoints.every_steps, cfg.checkpoints.keep),
        module,
        optimizer,
        history,
        strategies,
        writer=ctx.dist is None or ctx.dist.is_main,
        on_saved=ctx.checkpoint_written,
    )
    if checkpoint.restore() is not None:
        log.info("pretrain: resuming from the checkpoint at step %d", checkpoint.resumed_from_step)
    Loop(
        module,
        ctx.parallel_step(module),
        train_loader,
        optimizer,
        scheduler,
        ctx.policy,
        pre.epochs,
        phase="pretrain",
        history=history,
        callbacks=Callbacks([*strategies, checkpoint]),
        batch_transform=batch_op,
        seed=cfg.seed,
    ).run()
    meta = model_meta(ctx.config, class_names, task=False)
    meta["num_classes"] = pctx.num_classes
    meta["pretext"] = pretext.name
    meta["head_keys"] = sorted(head_keys(backbone, groups))
    save_model(backbone.cpu(), ctx.out / "backbone", meta)
    storage.write_json(str(ctx.out / "history.json"), history.epochs)
    save_training_curves(history.epochs, ctx.out / "curves.png", f"pretraining ({pretext.name})")
    checkpoint.clear()
    last = history.epochs[-1]
    return StageResult(
        outputs={"backbone": "backbone", "history": "history.json"},
        summary={
            "metrics": {"pretrain": {k: v for k, v in last.items() if k not in ("epoch", "phase")}},
            "pretrain": {
                "pretext": pretext.name,
                "classes": class_names,
                "images": len(train_sel),
                "labels_used": pretext.needs_labels,
                "data": store,
                "loss": loss_ref.name if make_loss is not None else None,
                "epochs": pre.epochs,
                "load": load_report,
                "resumed_from_step": checkpoint.resumed_from_step,
            },
        },
        artifacts=[
            Artifact("table", "pretrain-history", f"{pretext.name} pretraining per epoch", rows=history.epochs),
            Artifact("image", "pretrain-curves", "pretraining curves: loss and accuracy per epoch", path="curves.png"),
        ],
    )
