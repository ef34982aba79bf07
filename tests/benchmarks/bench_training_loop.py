"""graftflow's training loop vs a bare hand-written PyTorch loop (issue 7: ratio ≥ 0.95).

Same model (resnet `tiny`, 1×16×16 inputs, 10 classes), same in-memory batches,
same AdamW; the bare loop is what a person writes by hand (with the same
autocast/channels_last on CUDA). Repeats alternate between the two, and which goes first, so
drift in machine load hits both; the median of each is compared.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from graftflow.core.device import Hardware, resolve_policy
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.training.loop import train
from graftflow.core.training.schedule import GroupScheduler
from tests.benchmarks.results import Result


def _setup(batch: int, steps: int):
    family = PluginHost().families.get("resnet")
    torch.manual_seed(0)
    model = family.build("tiny", num_classes=10, in_chans=1, image_size=16)
    data = [(torch.randn(batch, 1, 16, 16), torch.randint(0, 10, (batch,))) for _ in range(steps)]
    return model, data


def _bare(model: nn.Module, data, policy) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for x, y in data:
        x, y = x.to(policy.torch_device, non_blocking=True), y.to(policy.torch_device, non_blocking=True)
        if policy.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with policy.autocast():
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    _sync(policy)
    return len(data) / (time.perf_counter() - start)


def _ours(model: nn.Module, data, policy) -> float:
    opt = torch.optim.AdamW([{"params": list(model.parameters()), "lr": 1e-3, "base_lr": 1e-3}])
    sched = GroupScheduler(opt, "constant", len(data), 0.0)
    start = time.perf_counter()
    train(model, lambda x, y: nn.functional.cross_entropy(model(x), y), data, opt, sched, policy, 1, phase="bench")
    _sync(policy)
    return len(data) / (time.perf_counter() - start)


def _sync(policy) -> None:
    if policy.device_type == "cuda":
        torch.cuda.synchronize()


def run(quick: bool = False) -> list[Result]:
    policy = resolve_policy("auto", "auto", Hardware.probe(), conv_net=True)
    batch, steps, repeats = (64, 10, 3) if quick else (64, 30, 7)
    model, data = _setup(batch, steps)
    bare_model, our_model = policy.prepare(copy.deepcopy(model)), policy.prepare(copy.deepcopy(model))
    _bare(bare_model, data[:3], policy)  # warm-up: allocator, cudnn autotune
    _ours(our_model, data[:3], policy)
    bare, ours = [], []
    for repeat in range(repeats):  # ABBA: neither loop always runs first (caches, clocks, leftover workers)
        if repeat % 2 == 0:
            bare.append(_bare(bare_model, data, policy))
            ours.append(_ours(our_model, data, policy))
        else:
            ours.append(_ours(our_model, data, policy))
            bare.append(_bare(bare_model, data, policy))
    where = f"{policy.device} {policy.precision}{' channels_last' if policy.channels_last else ''}"
    return [
        Result(
            name=f"training_loop_steps_per_s_{policy.device_type}",
            value=statistics.median(ours),
            baseline=statistics.median(bare),
            unit="steps/s",
            target_ratio=0.95,
            notes=f"resnet tiny, batch {batch}, {steps} steps × {repeats} alternating repeats, {where}",
            extra={"ours": ours, "bare": bare, "policy": policy.as_summary()},
        )
    ]
