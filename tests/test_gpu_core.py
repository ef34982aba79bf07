"""Issue 7 on CPU: OOM back-off with gradient accumulation, compile with fallback.

CUDA is not available here, so out-of-memory is injected by raising torch's own
`torch.OutOfMemoryError` (the type CUDA raises) from the step for large micro-batches.
"""

import copy
import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

from graftflow.core.device import Hardware, resolve_policy
from graftflow.core.errors import StageError
from graftflow.core.training.compile import compiled_forward
from graftflow.core.training.loop import History, train
from graftflow.core.training.schedule import GroupScheduler

CPU = resolve_policy("cpu", "fp32", Hardware(0, None, None, None, False))


def batches(n=3, size=16):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(size, 5, generator=g), torch.randint(0, 3, (size,), generator=g)) for _ in range(n)]


def fit(model, limit=None, data=None):
    opt = torch.optim.SGD([{"params": model.parameters(), "lr": 0.1, "base_lr": 0.1}])

    def step(x, y):
        if limit is not None and len(x) > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return nn.functional.cross_entropy(model(x), y)

    return train(model, step, data or batches(), opt, GroupScheduler(opt, "constant", 3, 0.0), CPU, 1, phase="test")


def test_oom_halves_the_micro_batch_and_keeps_the_full_batch_gradient(caplog):
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    backed_off = copy.deepcopy(reference)
    fit(reference)
    with caplog.at_level(logging.WARNING, logger="graft.train"):
        history = fit(backed_off, limit=4)
    assert history.micro_batch == 4
    assert history.oom_backoffs == [
        {"step": 1, "batch": 16, "micro_batch": 8},
        {"step": 1, "batch": 16, "micro_batch": 4},
    ]
    for a, b in zip(reference.parameters(), backed_off.parameters(), strict=False):
        assert torch.allclose(a, b, atol=1e-6)  # same updates: accumulation keeps the effective batch
    assert "micro-batch 16 → 8" in caplog.text and "accumulating 4 micro-batches per step" in caplog.text


def oom_in_the_optimizer_step(optimizer: torch.optim.Optimizer, times: int = 1) -> list[int]:
    """Make the optimizer's own step raise CUDA's out-of-memory error the first `times` times (where Adam's
    state is allocated on a real GPU), before it changes any weight; returns the calls, counted."""
    real, calls = optimizer.step, []

    def step(*args, **kwargs):
        calls.append(1)
        if len(calls) <= times:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")
        return real(*args, **kwargs)

    optimizer.step = step
    return calls


def test_oom_in_the_optimizer_step_retries_the_whole_step_with_half_the_micro_batch():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    backed_off = copy.deepcopy(reference)
    fit(reference)
    opt = torch.optim.SGD([{"params": backed_off.parameters(), "lr": 0.1, "base_lr": 0.1}])
    calls = oom_in_the_optimizer_step(opt)
    step = lambda x, y: nn.functional.cross_entropy(backed_off(x), y)  # noqa: E731
    history = train(backed_off, step, batches(), opt, GroupScheduler(opt, "constant", 3, 0.0), CPU, 1, phase="test")
    assert history.micro_batch == 8 and history.oom_backoffs == [{"step": 1, "batch": 16, "micro_batch": 8}]
    assert len(calls) == 4 and history.steps == 3  # step 1 taken again whole, then steps 2 and 3
    for a, b in zip(reference.parameters(), backed_off.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)  # each batch stepped once, on its full-batch gradient


def test_the_finetune_stage_records_an_optimizer_step_oom_in_summary_json(tmp_path, monkeypatch):
    from graftflow.core.config import load_config
    from graftflow.core.plugin_manager import PluginHost
    from graftflow.core.runs import Run
    from graftflow.core.stages import finetune
    from graftflow.core.stages.base import execute_stage
    from tests.support import DIGITS

    real = finetune.make_optimizer
    monkeypatch.setattr(finetune, "make_optimizer", lambda *a, **k: _oom_once(real(*a, **k)))
    config = load_config(
        DIGITS,
        [
            f"artifact_root={tmp_path / 'runs'}",
            f"data.cache_dir={tmp_path / 'ds'}",
            "data.image_size=8",
            "data.num_workers=0",
            "pretrain.enabled=false",
            "finetune.freeze_epochs=0",
            "finetune.epochs=1",
            "finetune.batch_size=32",
            "finetune.classes=[5, 6]",
            "augment.train=[]",
        ],
    )
    host, run = PluginHost(), Run.open(config)
    for stage in ("acquire", "finetune"):
        execute_stage(stage, config, run, host)
    recorded = json.loads((Path(run.url) / "summary.json").read_text())["finetune"]
    assert recorded["micro_batch"] == 16
    assert recorded["oom_backoffs"] == [{"step": 1, "batch": 32, "micro_batch": 16}]
    assert recorded["steps"] == recorded["images"] // 32  # every (full) batch stepped, the first one taken again


def _oom_once(optimizer):
    oom_in_the_optimizer_step(optimizer)
    return optimizer


def test_oom_with_a_micro_batch_of_one_is_a_clear_error():
    with pytest.raises(StageError, match="out of memory at step 1 even with a micro-batch of 1"):
        fit(nn.Linear(5, 3), limit=0)


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    def broken_compile(model, **kwargs):
        def run(x):
            raise RuntimeError("inductor: no working C++ compiler")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = nn.Linear(5, 3)
    forward, status = compiled_forward(model, True)
    x = torch.randn(2, 5)
    with caplog.at_level(logging.WARNING, logger="graft.train"):
        assert torch.equal(forward(x), model(x))
    assert status == {"requested": True, "compiled": False, "error": "RuntimeError: inductor: no working C++ compiler"}
    assert "torch.compile failed, training eagerly instead" in caplog.text


def test_compile_really_compiles_on_cpu():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    forward, status = compiled_forward(model, True)
    x = torch.randn(4, 5)
    assert torch.allclose(forward(x), model(x), atol=1e-6)
    assert status == {"requested": True, "compiled": True, "error": None}
    off, status_off = compiled_forward(model, False)
    assert off is model and status_off["compiled"] is False


def test_non_finite_loss_names_the_step_and_lrs_and_keeps_the_last_checkpoint(tmp_path):
    from graftflow.core.training.checkpointing import Checkpointer
    from graftflow.core.training.resume import Checkpoint

    model = nn.Linear(5, 3)
    opt = torch.optim.SGD([{"params": model.parameters(), "lr": 0.1, "base_lr": 0.1, "layer_group": "head"}])
    history = History()
    checkpoint = Checkpoint(Checkpointer(str(tmp_path / "ck"), every_steps=2), model, opt, history)
    sched = GroupScheduler(opt, "constant", 10, 0.0)
    calls = {"n": 0}

    def step(x, y):
        calls["n"] += 1
        loss = nn.functional.cross_entropy(model(x), y)
        return loss * float("nan") if calls["n"] >= 3 else loss

    with pytest.raises(StageError, match=r"non-finite loss by step \d+.*head=0\.1"):
        train(model, step, batches(4), opt, sched, CPU, 1, history=history, phase="test", callbacks=[checkpoint])
    step_no, _, saved = checkpoint.store.latest()
    assert step_no == 2 and saved["step"] == 2  # the good checkpoint before the NaN is kept
