"""graftflow's training loop vs a bare hand-written PyTorch loop (issue 19: ratio ≥ 0.98).

Two figures, each measured in repeats that alternate which loop goes first (ABBA), medians compared:

- `training_loop_steps_per_s_<device>`: the loop alone, no callbacks — same model (resnet `tiny`,
  1×16×16 inputs, 10 classes), same in-memory batches, same AdamW; the bare loop is what a person
  writes by hand (with the same autocast/channels_last on CUDA).
- `training_loop_finetune_stage`: the loop as the fine-tune stage runs it, with the callback list
  `core/stages/finetune.py` builds (freeze schedule, BatchNorm policy, EMA, validation, best epoch,
  early stopping when set, epoch log and observers, checkpoints) on the demo config: the real stage is
  run and the time spent inside its `Loop.run` is taken (model building, saving and plots are not in
  it). The bare loop trains the same model for the same epochs on the very same loader (decoded
  cache, no augmentation, so data costs the same for both) with a hand-written AdamW step, and
  validates on the same validation loader after every epoch, as anyone would.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from graftflow.core.config import load_config
from graftflow.core.device import Hardware, resolve_policy
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages import finetune
from graftflow.core.stages.base import execute_stage
from graftflow.core.training.evaluation import Validation
from graftflow.core.training.loop import train
from graftflow.core.training.schedule import GroupScheduler
from tests.benchmarks.results import Result
from tests.support import DIGITS


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


def _alternate(first, second, repeats: int) -> tuple[list[float], list[float]]:
    a, b = [], []
    for repeat in range(repeats):  # ABBA: neither loop always runs first (caches, clocks, leftover workers)
        if repeat % 2 == 0:
            a.append(first())
            b.append(second())
        else:
            b.append(second())
            a.append(first())
    return a, b


def _bests(ours: list[float], bare: list[float]) -> dict[str, float]:
    """The fastest repeat of each (its minimum time), next to the medians the Result compares."""
    return {"best": max(ours), "bare_best": max(bare), "ratio_of_bests": max(ours) / max(bare)}


def loop_alone(quick: bool, smoke: bool = False) -> Result:
    policy = resolve_policy("auto", "auto", Hardware.probe(), conv_net=True)
    batch, steps, repeats = (16, 3, 2) if smoke else (64, 10, 2) if quick else (64, 30, 7)
    model, data = _setup(batch, steps)
    bare_model, our_model = policy.prepare(copy.deepcopy(model)), policy.prepare(copy.deepcopy(model))
    _bare(bare_model, data[:3], policy)  # warm-up: allocator, cudnn autotune
    _ours(our_model, data[:3], policy)
    ours, bare = _alternate(lambda: _ours(our_model, data, policy), lambda: _bare(bare_model, data, policy), repeats)
    where = f"{policy.device} {policy.precision}{' channels_last' if policy.channels_last else ''}"
    return Result(
        name=f"training_loop_steps_per_s_{policy.device_type}",
        value=statistics.median(ours),
        baseline=statistics.median(bare),
        unit="steps/s",
        target_ratio=0.98,
        notes=f"the loop without callbacks: resnet tiny, batch {batch}, {steps} steps × {repeats} alternating "
        f"repeats, {where}",
        extra={"ours": ours, "bare": bare, **_bests(ours, bare), "policy": policy.as_summary()},
    )


class _Captured:
    """The fine-tune stage's loops, timed: the stage runs unchanged, with `finetune.Loop` replaced by a subclass
    that only measures `run()` and keeps the loop (its loader, model and callbacks) for the bare baseline."""

    def __init__(self):
        self.loops, self.seconds = [], 0.0
        captured = self

        class TimedLoop(finetune.Loop):
            def run(self):
                start = time.perf_counter()
                try:
                    return super().run()
                finally:
                    captured.seconds += time.perf_counter() - start
                    captured.loops.append(self)

        self.cls = TimedLoop

    def stage(self, config, run, host) -> tuple[float, int]:
        real, finetune.Loop = finetune.Loop, self.cls
        try:
            execute_stage("finetune", config, run, host)
        finally:
            finetune.Loop = real
        return self.seconds, run.summary()["finetune"]["steps"]


def _bare_epochs(loop, epochs: int, lr: float, label_smoothing: float) -> tuple[float, int]:
    """What a person writes: train on the stage's loader, then validate on its validation loader, every epoch."""
    model = copy.deepcopy(loop.model.model).train()  # the stage trains a TrainStep: model + criterion + method
    val_loader = next(c.loader for c in loop.callbacks if isinstance(c, Validation))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    steps = 0
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in loop.loader:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y, label_smoothing=label_smoothing).backward()
            opt.step()
            steps += 1
        model.eval()
        correct = seen = 0
        with torch.no_grad():
            for x, y in val_loader:
                logits = model(x)
                nn.functional.cross_entropy(logits, y, label_smoothing=label_smoothing)
                correct, seen = correct + int((logits.argmax(1) == y).sum()), seen + len(y)
    return time.perf_counter() - start, steps


def finetune_stage(quick: bool, smoke: bool = False) -> Result:
    repeats = 2 if quick else 6
    with tempfile.TemporaryDirectory(prefix="graft-bench-loop-") as tmp:
        overrides = [
            f"artifact_root={Path(tmp) / 'runs'}",
            f"data.cache_dir={Path(tmp) / 'ds'}",
            "device=cpu",
            "pretrain.enabled=false",
            "augment.train=[]",  # the data path then costs the same for both loops: the decoded cache, gathered
            "data.num_workers=0",
            "data.cache_decoded=true",
            "finetune.freeze_epochs=0",  # the whole model trains, as in the bare loop
            "finetune.lr=0.003",
            *(["data.image_size=8", "finetune.epochs=1"] if quick or smoke else []),
            *(["finetune.classes=[5, 6]"] if smoke else []),
        ]
        config, host = load_config(DIGITS, overrides), PluginHost()
        run = Run.open(config)
        execute_stage("acquire", config, run, host)
        ft = config.finetune
        smoothing = ft.loss.params.get("label_smoothing", 0.0)
        warm = _Captured()
        warm.stage(config, run, host)  # warm-up, and the loop the baseline reuses
        loop = warm.loops[-1]

        def ours() -> float:
            seconds, steps = _Captured().stage(config, run, host)
            return steps / seconds

        def bare() -> float:
            seconds, steps = _bare_epochs(loop, ft.epochs, ft.lr, smoothing)
            return steps / seconds

        our_rates, bare_rates = _alternate(ours, bare, repeats)
        names = [type(c).__name__ for c in loop.callbacks]
    return Result(
        name="training_loop_finetune_stage",
        value=statistics.median(our_rates),
        baseline=statistics.median(bare_rates),
        unit="steps/s",
        target_ratio=0.98,
        notes=f"the fine-tune stage's Loop with its callbacks ({', '.join(names)}) vs a bare loop with per-epoch "
        f"validation; demo config{' (8 px, 1 epoch)' if quick else ''}, {ft.epochs} epochs, CPU; "
        f"{repeats} alternating repeats, medians",
        extra={
            "ours": our_rates,
            "bare": bare_rates,
            **_bests(our_rates, bare_rates),
            "callbacks": names,
            "epochs": ft.epochs,
        },
    )


def run(quick: bool = False, smoke: bool = False) -> list[Result]:
    return [loop_alone(quick, smoke), finetune_stage(quick, smoke)]
