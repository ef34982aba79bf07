"""Issue 6: discriminative LRs, layer decay, gradual unfreezing, BN policy, plateau, early stopping, EMA."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from timm.optim import param_groups_layer_decay
from torch import nn

from graftflow.core.config import load_config
from graftflow.core.errors import ConfigError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.specs import LayerGroup, Monitor
from graftflow.core.stages.base import execute_stage
from graftflow.core.training.freezing import batchnorm_layers, set_trainable, train_mode, unfrozen_groups
from graftflow.core.training.param_groups import build_param_groups, group_lrs
from graftflow.core.training.schedule import GroupScheduler
from graftflow.core.training.selection import BestTracker, make_ema
from tests.support import DIGITS


@pytest.fixture(scope="module")
def host():
    return PluginHost()


def test_layer_decay_scales_equal_timms_for_a_vit(host):
    family = host.families.get("vit")
    model = family.build("micro", num_classes=5, in_chans=1, image_size=16)
    groups = family.layer_groups(model)
    ours = {}
    for group, lr in zip(groups, group_lrs(1.0, len(groups), layer_decay=0.65), strict=False):
        ours.update({name: lr for name in group.params})
    by_id = {id(p): n for n, p in model.named_parameters()}
    theirs = {
        by_id[id(p)]: g["lr_scale"] for g in param_groups_layer_decay(model, layer_decay=0.65) for p in g["params"]
    }
    assert ours.keys() == theirs.keys()
    assert all(ours[n] == pytest.approx(theirs[n], rel=1e-12) for n in ours), {
        n: (ours[n], theirs[n]) for n in ours if ours[n] != pytest.approx(theirs[n])
    }
    assert len(set(theirs.values())) == len(groups)  # one distinct scale per group: no collapsed layers


def test_layer_decay_and_lo_hi_are_exclusive():
    with pytest.raises(ConfigError, match="finetune: layer_decay spreads a single lr"):
        load_config(DIGITS, ["finetune.layer_decay=0.7"])  # the demo uses lr: [lo, hi]
    assert load_config(DIGITS, ["finetune.layer_decay=0.7", "finetune.lr=0.001"]).finetune.layer_decay == 0.7


def test_gradual_unfreezing_adds_one_group_per_epoch_from_the_head():
    groups = [LayerGroup(n, ()) for n in ("stem", "l1", "l2", "head")]
    assert [sorted(unfrozen_groups(groups, e, head_only_done=True)) for e in range(4)] == [
        ["head", "l2"],
        ["head", "l1", "l2"],
        ["head", "l1", "l2", "stem"],
        ["head", "l1", "l2", "stem"],
    ]
    assert unfrozen_groups(groups, 0, head_only_done=False) == {"head"}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


GROUPS = [
    LayerGroup("body", ("conv.weight", "conv.bias", "bn.weight", "bn.bias")),
    LayerGroup("head", ("fc.weight", "fc.bias")),
]


@pytest.mark.parametrize(
    "bn, stats_move, weights_train", [("train", True, True), ("freeze-stats", False, True), ("freeze", False, False)]
)
def test_batchnorm_policy(bn, stats_move, weights_train):
    torch.manual_seed(0)
    model = Net()
    set_trainable(model, GROUPS, {"body", "head"}, bn)
    train_mode(model, bn)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 1, 6, 6) * 3 + 1).pow(2).sum().backward()
        opt.step()
    after = model.state_dict()
    assert (not torch.equal(before["bn.running_mean"], after["bn.running_mean"])) is stats_move
    assert (not torch.equal(before["bn.weight"], after["bn.weight"])) is weights_train
    assert not torch.equal(before["conv.weight"], after["conv.weight"])
    assert all(layer.training is (bn == "train") for layer in batchnorm_layers(model))


def test_plateau_reduces_every_group_by_the_same_factor():
    model = Net()
    opt_groups, _ = build_param_groups(model, GROUPS, [1e-3, 1e-2], 0.0)
    opt = torch.optim.SGD(opt_groups)
    sched = GroupScheduler(
        opt,
        "plateau",
        total_steps=100,
        warmup=0.0,
        monitor=Monitor("val_loss", "min"),
        plateau_patience=1,
        plateau_factor=0.5,
    )
    for loss in (1.0, 0.9, 0.95, 0.97):  # improves, then two epochs without improvement (> patience 1)
        sched.epoch_end({"val_loss": loss})
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["base_lr"] * 0.5 for g in opt.param_groups])


def test_best_tracker_and_ema_formula():
    model = Net()
    tracker = BestTracker(Monitor("val_accuracy", "max"))
    assert tracker.update(1, {"val_accuracy": 0.5}, model) and not tracker.update(2, {"val_accuracy": 0.4}, model)
    assert tracker.best_epoch == 1 and tracker.since_best == 1
    lowest = BestTracker(Monitor("val_mae", "min"))  # the declared mode decides, not the metric's name
    assert lowest.update(1, {"val_mae": 2.0}, model) and lowest.update(2, {"val_mae": 1.0}, model)
    assert not lowest.update(3, {"val_mae": 1.5}, model) and lowest.best_epoch == 2
    ema = make_ema(model, 0.9)
    w0 = model.fc.weight.detach().clone()
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    ema.update_parameters(model)  # first update copies the weights
    with torch.no_grad():
        model.fc.weight.add_(1.0)
    ema.update_parameters(model)
    expected = 0.9 * (w0 + 1) + 0.1 * (w0 + 2)
    assert torch.allclose(ema.module.fc.weight, expected)


# --- through the finetune stage itself (core, no Prefect) ----------------------------------


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory, host):
    root = tmp_path_factory.mktemp("strategies")
    base = [
        f"artifact_root={root / 'runs'}",
        f"data.cache_dir={root / 'ds'}",
        "data.image_size=8",
        "pretrain.epochs=2",
        "pretrain.schedule=constant",
        "augment.train=[]",
    ]
    config = load_config(DIGITS, base)
    run = Run.open(config)
    for stage in ("acquire", "pretrain"):
        execute_stage(stage, config, run, host)
    backbone = load_file(str(root / "runs" / config.name / run.run_id / "pretrain" / "backbone" / "model.safetensors"))
    return base, run.run_id, backbone


def finetune_with(pretrained_run, host, *overrides):
    base, run_id, _ = pretrained_run
    config = load_config(DIGITS, base + list(overrides))
    run = Run(config, run_id)
    execute_stage("finetune", config, run, host)
    weights = load_file(str(config.artifact_root) + f"/{config.name}/{run_id}/finetune/model/model.safetensors")
    return run.summary(), weights


def test_head_only_leaves_the_body_bit_identical(pretrained_run, host):
    _, _, backbone = pretrained_run
    summary, weights = finetune_with(
        pretrained_run, host, "finetune.freeze_epochs=1", "finetune.epochs=0", "finetune.bn=freeze-stats"
    )
    body = [k for k in weights if not k.startswith("fc.")]
    assert body and all(torch.equal(weights[k], backbone[k]) for k in body)  # incl. BN running stats
    assert not torch.equal(weights["fc.weight"][:1], torch.zeros_like(weights["fc.weight"][:1]))
    assert summary["finetune"]["phases"] == ["head"]


def test_bn_stats_fixed_under_freeze_stats_while_weights_train(pretrained_run, host):
    _, _, backbone = pretrained_run
    _, weights = finetune_with(
        pretrained_run,
        host,
        "finetune.freeze_epochs=0",
        "finetune.epochs=1",
        "finetune.bn=freeze-stats",
        "finetune.restore_best=false",
    )
    stats = [k for k in weights if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(weights[k], backbone[k]) for k in stats)
    assert not torch.equal(weights["conv1.weight"], backbone["conv1.weight"])
    _, trained = finetune_with(
        pretrained_run,
        host,
        "finetune.freeze_epochs=0",
        "finetune.epochs=1",
        "finetune.bn=train",
        "finetune.restore_best=false",
    )
    assert not all(torch.equal(trained[k], backbone[k]) for k in stats)


def test_gradual_unfreezing_and_layer_decay_in_the_stage(pretrained_run, host):
    summary, _ = finetune_with(
        pretrained_run,
        host,
        "finetune.freeze_epochs=1",
        "finetune.epochs=3",
        "finetune.unfreeze=gradual",
        "finetune.lr=0.004",
        "finetune.layer_decay=0.5",
    )
    lrs = [g["lr"] for g in summary["param_groups"]]
    assert lrs == pytest.approx([0.004 * 0.5 ** (len(lrs) - 1 - i) for i in range(len(lrs))])
    history_path = summary["stages"]["finetune"]["outputs"]["history"]
    assert history_path == "history.json" and summary["finetune"]["lr_spread"] == "layer_decay"


# An absurd LR makes validation worse after the first epochs; a constant schedule without warm-up makes
# a run's first k epochs the same whatever its length, so a run stopped at epoch k holds epoch k's weights.
DIVERGING = [
    "finetune.freeze_epochs=1",
    "finetune.lr=3.0",
    "finetune.schedule=constant",
    "finetune.warmup=0",
    "finetune.optimizer=sgd",
    "finetune.monitor=val_accuracy",
]


def test_early_stopping_saves_the_best_epochs_weights(pretrained_run, host):
    summary, saved = finetune_with(pretrained_run, host, *DIVERGING, "finetune.epochs=6", "finetune.early_stopping=1")
    ft = summary["finetune"]
    history = load_history(summary, pretrained_run)
    best = max(history, key=lambda e: e["val_accuracy"])
    assert ft["stopped_early"] and ft["epochs_run"] == len(history) < 7
    assert ft["best_epoch"] == best["epoch"] and ft["epochs_run"] - ft["best_epoch"] == 1  # patience 1
    assert ft["restored_best"] and best["val_accuracy"] > history[-1]["val_accuracy"]
    reported = dict(summary["metrics"]["finetune"])  # the best epoch's metrics; `seconds` is the stage's own
    assert reported.pop("epoch_seconds") == best["seconds"] and reported.pop("seconds") > best["seconds"]
    assert reported == {k: v for k, v in best.items() if k not in ("epoch", "phase", "seconds")}
    # The same run stopped after the best epoch: its weights are the ones that must have been saved ...
    head_epochs, all_epochs = (1, 0) if best["epoch"] == 1 else (1, best["epoch"] - 1)
    _, at_best = finetune_with(
        pretrained_run,
        host,
        *DIVERGING,
        f"finetune.freeze_epochs={head_epochs}",
        f"finetune.epochs={all_epochs}",
        "finetune.restore_best=false",
    )
    assert saved.keys() == at_best.keys()
    wrong = differing(saved, at_best)
    assert not wrong, (
        f"the saved weights are not epoch {best['epoch']}'s: {len(wrong)} tensors differ ({wrong[:3]}, ...)"
    )
    # ... and not the last epoch's, which the same run without restore_best saves
    _, last = finetune_with(
        pretrained_run,
        host,
        *DIVERGING,
        "finetune.epochs=6",
        "finetune.early_stopping=1",
        "finetune.restore_best=false",
    )
    assert differing(last, at_best)


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in a if not torch.equal(a[k], b[k])]


def load_history(summary: dict, pretrained_run) -> list[dict]:
    base, run_id, _ = pretrained_run
    config = load_config(DIGITS, base)
    return json.loads(Path(f"{config.artifact_root}/{config.name}/{run_id}/finetune/history.json").read_text())


def test_ema_model_is_what_gets_saved(pretrained_run, host):
    _, _, backbone = pretrained_run
    common = ["finetune.freeze_epochs=0", "finetune.epochs=1", "finetune.restore_best=false"]
    summary, averaged = finetune_with(pretrained_run, host, *common, "finetune.ema=0.99")
    _, plain = finetune_with(pretrained_run, host, *common)
    assert summary["finetune"]["ema"] == 0.99
    assert averaged.keys() == plain.keys()  # the plain model's keys, not AveragedModel's

    def moved(weights):
        return sum(float((weights[k] - backbone[k]).norm()) for k in ("conv1.weight", "layer4.0.conv2.weight"))

    assert moved(averaged) < 0.5 * moved(plain)  # an average over ~20 steps at 0.99 lags far behind


def test_lr_find_stage_writes_only_its_own_folder(pretrained_run, host):
    """lr-find trains from the pretrain backbone and restores: every other file of the run keeps its bytes."""
    base, run_id, _ = pretrained_run
    config = load_config(DIGITS, base + ["finetune.lr_find.steps=60", "finetune.lr=0.003"])
    run = Run(config, run_id)
    before = file_digests(Path(run.url))
    execute_stage("lr-find", config, run, host)
    after = file_digests(Path(run.url))
    found = run.summary()["lr_find"]
    assert found["start_weights"] == "pretrain backbone" and found["points"] >= 20
    assert 1e-6 < found["suggested_lr"] < 1.0
    assert any(p.startswith("pretrain/backbone/") for p in before)  # the weights lr-find started from
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert changed == {"summary.json", "lr-find/lr_find.json", "lr-find/lr_find.png"}, sorted(changed)


def file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def test_lr_range_test_suggests_a_rate_below_divergence_on_a_known_quadratic():
    """Least squares with SGD: full-batch steps diverge above 2/λmax (λmax: the Hessian's largest eigenvalue).
    The smoothed loss keeps falling for a while after that (its minimum lies past divergence), so the suggestion
    must come from the steepest descent, within two decades below the divergence rate."""
    from graftflow.core.device import Hardware, resolve_policy
    from graftflow.core.training.lr_finder import lr_range_test

    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g)
    diverges_at = 2 / float(torch.linalg.eigvalsh(2 * x.T @ x / len(x)).max())
    model = nn.Linear(8, 1, bias=False)
    nn.init.zeros_(model.weight)
    opt = torch.optim.SGD([{"params": model.parameters(), "lr": 1.0, "base_lr": 1.0}])
    policy = resolve_policy("cpu", "fp32", Hardware(0, None, None, None, False))
    result = lr_range_test(
        model, lambda a, b: nn.functional.mse_loss(model(a), b), [(x, y)], opt, policy, start=1e-4, end=100
    )
    hints = result.suggestions()
    assert hints["min_loss"] > diverges_at  # the naive choice would diverge
    assert diverges_at / 100 < hints["steepest"] < diverges_at


def test_range_test_leaves_model_and_optimizer_as_they_were():
    from torch.utils.data import DataLoader, TensorDataset

    from graftflow.core.device import Hardware, resolve_policy
    from graftflow.core.training.lr_finder import lr_range_test

    torch.manual_seed(0)
    model = Net()
    opt_groups, _ = build_param_groups(model, GROUPS, [1e-3, 1e-2], 0.01)
    opt = torch.optim.AdamW(opt_groups)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = DataLoader(TensorDataset(torch.randn(32, 1, 6, 6), torch.randint(0, 2, (32,))), batch_size=8)
    policy = resolve_policy("cpu", "fp32", Hardware(0, None, None, None, False))
    result = lr_range_test(
        model, lambda x, y: nn.functional.cross_entropy(model(x), y), data, opt, policy, start=1e-5, end=10, steps=30
    )
    assert len(result.lrs) >= 5 and result.lrs == sorted(result.lrs)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert opt.state_dict()["state"] == {} and [g["lr"] for g in opt.param_groups] == [
        g["base_lr"] for g in opt.param_groups
    ]
