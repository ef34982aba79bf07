"""Issue 13: the training loop calls callbacks at named events; val_loss is the stage's own loss; checkpoints notify."""

import textwrap

import pytest
import torch
from torch import nn

from graftflow.core.config import load_config
from graftflow.core.data.dataset import ArrowImageDataset, normalizer, select
from graftflow.core.device import Hardware, resolve_policy
from graftflow.core.models.saved import read_model
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from graftflow.core.training.callbacks import Callback
from graftflow.core.training.checkpointing import COMPLETE
from graftflow.core.training.loop import train
from graftflow.core.training.losses import build_loss
from graftflow.core.training.schedule import GroupScheduler
from tests.support import DIGITS

CPU = resolve_policy("cpu", "fp32", Hardware(0, None, None, None, False))


class Recorder(Callback):
    def __init__(self, log, name):
        self.log, self.name = log, name

    def __getattribute__(self, attr):
        if attr.startswith("on_"):
            return lambda loop: object.__getattribute__(self, "log").append((self.name, attr, loop.epoch))
        return object.__getattribute__(self, attr)


class AddsMetric(Callback):
    def on_validate(self, loop):
        loop.metrics["val_score"] = 0.5


class SeesMetric(Callback):
    def __init__(self):
        self.seen = []

    def on_epoch_end(self, loop):
        self.seen.append((loop.metrics["val_score"], loop.history.epochs[-1]["val_score"]))


class StopAfterFirst(Callback):
    def on_epoch_end(self, loop):
        loop.should_stop = True


def tiny_fit(callbacks, epochs=2, batches=3):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD([{"params": model.parameters(), "lr": 0.1, "base_lr": 0.1}])
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(batches)]
    sched = GroupScheduler(opt, "constant", epochs * batches, 0.0)
    return train(
        model,
        lambda x, y: nn.functional.cross_entropy(model(x), y),
        data,
        opt,
        sched,
        CPU,
        epochs,
        phase="unit",
        callbacks=callbacks,
    )


def test_events_fire_in_order_and_in_list_order():
    log = []
    tiny_fit([Recorder(log, "a"), Recorder(log, "b")], epochs=2, batches=2)
    events = [(name, event) for name, event, _ in log]
    per_epoch = ["on_epoch_start", "on_step_end", "on_step_end", "on_validate", "on_epoch_end"]
    expected = ["on_fit_start", *per_epoch, *per_epoch, "on_fit_end"]
    assert [e for n, e in events if n == "a"] == expected
    assert events[:2] == [("a", "on_fit_start"), ("b", "on_fit_start")]  # every event: the list's order
    assert [epoch for n, e, epoch in log if n == "a" and e == "on_epoch_end"] == [0, 1]


def test_metrics_from_on_validate_reach_on_epoch_end_and_the_history():
    seer = SeesMetric()
    history = tiny_fit([AddsMetric(), seer])
    assert seer.seen == [(0.5, 0.5), (0.5, 0.5)]
    assert all(e["val_score"] == 0.5 and "train_loss" in e for e in history.epochs)


def test_should_stop_ends_the_phase_after_that_epoch():
    history = tiny_fit([StopAfterFirst()], epochs=5)
    assert len(history.epochs) == 1


# --- through the finetune stage (core, no Prefect) ----------------------------------------------


def tiny(root, *extra):
    return load_config(
        DIGITS,
        [
            f"artifact_root={root / 'runs'}",
            f"data.cache_dir={root / 'ds'}",
            "data.image_size=8",
            "pretrain.enabled=false",
            "finetune.freeze_epochs=0",
            "finetune.epochs=2",
            "finetune.schedule=constant",
            "augment.train=[]",
            *extra,
        ],
    )


def test_val_loss_is_the_stages_own_loss_focal(tmp_path):
    """With finetune.loss focal, val_loss is the focal loss of the saved model on the val split, not cross-entropy."""
    config = tiny(tmp_path, "finetune.loss={name: focal, gamma: 2.0}", "finetune.monitor=val_loss")
    host, run = PluginHost(), Run.open(config)
    for stage in ("acquire", "finetune"):
        execute_stage(stage, config, run, host)
    summary = run.summary()
    assert summary["finetune"]["loss"] == "focal"
    recorded = summary["metrics"]["finetune"]["val_loss"]  # the saved epoch's record (best by val_loss)

    model, meta = read_model(host, f"{run.url}/finetune/model", "test")
    val = select(summary["data"]["path"], "val", meta["class_names"], "test")
    images = ArrowImageDataset(val, 1, 8, (), normalizer([0.5], [0.5], 1))
    x = torch.stack([images[i][0] for i in range(len(images))])
    y = torch.as_tensor(val.labels)
    with torch.no_grad():
        logits = model.eval()(x)
        focal = float(build_loss(host, {"name": "focal", "gamma": 2.0}, "finetune.loss")(logits, y))
        cross_entropy = float(nn.functional.cross_entropy(logits, y))
    assert recorded == pytest.approx(focal, rel=1e-4, abs=1e-6)
    assert abs(recorded - cross_entropy) > 1e-3  # a different number than the old, always-CE val_loss


def test_graft_on_checkpoint_fires_after_each_complete_checkpoint(tmp_path):
    observer = tmp_path / "ckpt_observer.py"
    observer.write_text(
        textwrap.dedent(f'''
        import os
        from graftflow.core import hookimpl
        seen = []

        @hookimpl
        def graft_on_checkpoint(run, stage, path, step):
            seen.append((stage, step, os.path.exists(os.path.join(path, "{COMPLETE}"))))
    ''')
    )
    config = tiny(tmp_path, "checkpoints.every_steps=7", f"plugins=[{observer}]")
    host, run = PluginHost(config.plugins), Run.open(config)
    for stage in ("acquire", "finetune"):
        execute_stage(stage, config, run, host)
    import graft_plugin_ckpt_observer as module

    steps = run.summary()["finetune"]["steps"]
    assert module.seen, "no checkpoint event"
    assert all(stage == "finetune" and complete for stage, _, complete in module.seen)
    assert {s for _, s, _ in module.seen} >= set(range(7, steps + 1, 7))  # every 7 steps ...
    assert module.seen[-1][1] == steps  # ... and at every epoch end, the last one included
