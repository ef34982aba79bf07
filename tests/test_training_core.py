"""Parameter groups, LR spreads, schedules and the device policy, on CPU."""

import math

import pytest
import torch
from torch import nn

from graftflow.core.device import Hardware, resolve_policy
from graftflow.core.errors import ConfigError, PluginError
from graftflow.core.models.build import check_partition
from graftflow.core.specs import LayerGroup
from graftflow.core.training.freezing import set_trainable
from graftflow.core.training.param_groups import build_param_groups, spread_lrs
from graftflow.core.training.schedule import GroupScheduler, factor


def fastai_even_mults(start, stop, n):
    """fastai's own formula for slice(lo, hi) over n groups (fastai.basics.even_mults)."""
    mult = stop / start
    step = mult ** (1 / (n - 1))
    return [start * (step**i) for i in range(n)]


@pytest.mark.parametrize("n", [2, 3, 6, 13])
def test_lo_hi_spread_equals_fastai(n):
    assert spread_lrs([1e-5, 1e-2], n) == pytest.approx(fastai_even_mults(1e-5, 1e-2, n), rel=1e-12)


def test_single_lr_is_uniform_and_one_group_gets_hi():
    assert spread_lrs(3e-3, 4) == [3e-3] * 4
    assert spread_lrs([1e-4, 1e-2], 1) == [1e-2]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


GROUPS = [
    LayerGroup("body", ("body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias")),
    LayerGroup("head", ("fc.weight", "fc.bias")),
]


def test_groups_split_decay_and_keep_their_lr():
    model = Tiny()
    opt_groups, records = build_param_groups(model, GROUPS, [1e-4, 1e-2], weight_decay=0.05)
    by = {(g["layer_group"], g["weight_decay"]): g for g in opt_groups}
    assert by[("body", 0.05)]["lr"] == 1e-4 and len(by[("body", 0.05)]["params"]) == 1  # conv weight only
    assert len(by[("body", 0.0)]["params"]) == 3  # bias and both BN params: no decay
    assert by[("head", 0.05)]["lr"] == 1e-2
    assert [(r.name, r.n_params) for r in records] == [("body", 4 * 9 + 4 + 4 + 4), ("head", 10)]


def test_partition_must_cover_every_parameter_once():
    check_partition(Tiny(), GROUPS, "tiny")
    with pytest.raises(PluginError, match="leave out parameter 'fc.bias'"):
        check_partition(Tiny(), [GROUPS[0], LayerGroup("head", ("fc.weight",))], "tiny")
    with pytest.raises(PluginError, match="in groups 'body' and 'head'"):
        check_partition(Tiny(), [GROUPS[0], LayerGroup("head", ("fc.weight", "fc.bias", "body.0.weight"))], "tiny")


def test_frozen_groups_receive_no_update():
    torch.manual_seed(0)
    model = Tiny()
    opt_groups, _ = build_param_groups(model, GROUPS, [1e-2, 1e-2], weight_decay=0.1)
    opt = torch.optim.AdamW(opt_groups)
    set_trainable(model, GROUPS, {"head"})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.randn(4, 1, 6, 6)).sum().backward()
    opt.step()
    after = model.state_dict()
    assert torch.equal(before["body.0.weight"], after["body.0.weight"])  # weight decay must not touch it either
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


def test_schedule_scales_every_group_by_the_same_factor():
    model = Tiny()
    opt_groups, _ = build_param_groups(model, GROUPS, [1e-4, 1e-2], weight_decay=0.0)
    opt = torch.optim.AdamW(opt_groups)
    sched = GroupScheduler(opt, "one-cycle", total_steps=20, warmup=0.25)
    for _ in range(7):
        sched.step()
    ratios = {round(g["lr"] / g["base_lr"], 12) for g in opt.param_groups}
    assert len(ratios) == 1 and ratios.pop() == pytest.approx(factor("one-cycle", 7, 20, 0.25))


def test_one_cycle_shape():
    assert factor("one-cycle", 0, 100, 0.25) == pytest.approx(1 / 25)
    assert factor("one-cycle", 25, 100, 0.25) == pytest.approx(1.0)
    assert factor("one-cycle", 100, 100, 0.25) == pytest.approx(1 / (25 * 1e5))
    assert factor("cosine", 100, 100, 0.1) == pytest.approx(0.0, abs=1e-12)
    assert math.isclose(factor("constant", 5, 10, 0.0), 1.0)


NO_GPU = Hardware(0, None, None, None, False)
AMPERE = Hardware(1, (8, 0), "A100", 80.0, False)
TURING = Hardware(1, (7, 5), "T4", 15.0, False)


def test_device_policy_rules():
    cpu = resolve_policy("auto", "auto", NO_GPU)
    assert (cpu.device, cpu.precision, cpu.channels_last, cpu.pin_memory) == ("cpu", "fp32", False, False)
    a100 = resolve_policy("auto", "auto", AMPERE, conv_net=True)
    assert (a100.device, a100.precision, a100.channels_last, a100.grad_scaler, a100.pin_memory) == (
        "cuda",
        "bf16",
        True,
        False,
        True,
    )
    t4 = resolve_policy("auto", "auto", TURING, conv_net=False)
    assert (t4.precision, t4.grad_scaler, t4.channels_last) == ("fp16", True, False)
    with pytest.raises(ConfigError, match="device: 'cuda:1' requested but this machine has 1"):
        resolve_policy("cuda:1", "auto", AMPERE)
    with pytest.raises(ConfigError, match="bf16 needs CUDA capability"):
        resolve_policy("cuda", "bf16", TURING)
    with pytest.raises(ConfigError, match="precision: fp16 needs a CUDA device"):
        resolve_policy("cpu", "fp16", NO_GPU)
