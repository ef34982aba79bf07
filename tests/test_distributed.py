"""DDP on CPU: gloo, 2 processes launched through torch.distributed.run from the stage.

A probe plugin (tests/ddp_probe.py), loaded in every rank, records what each process did: the model's
whole state at every training step, each step's loss and every path it wrote. From those: the ranks
hold identical weights after every step while seeing different batches, the epoch's train_loss is the
mean over both ranks (not rank 0's own), and rank 1 writes nothing where the run lives.
"""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from graftflow.core.config import load_config
from graftflow.core.hookspecs import hookimpl
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from tests.support import DIGITS, ROOT

pytestmark = pytest.mark.slow

PROBE = ROOT / "tests" / "ddp_probe.py"


class EpochRecorder:
    """A run-time observer in this process (like the CLI's progress display)."""

    def __init__(self):
        self.heard = []

    @hookimpl
    def graft_on_epoch_end(self, run, stage, epoch, metrics):
        self.heard.append((stage, epoch, sorted(metrics)))


def probe_records(directory: Path, stage: str) -> list[dict]:
    return [json.loads((directory / f"{stage}-{rank}.json").read_text()) for rank in (0, 1)]


def epoch_means(losses: list[float], epochs: int) -> list[float]:
    per_epoch = len(losses) // epochs
    assert per_epoch * epochs == len(losses)
    return [sum(losses[i * per_epoch : (i + 1) * per_epoch]) / per_epoch for i in range(epochs)]


def test_pretrain_and_finetune_run_as_two_gloo_processes(tmp_path, monkeypatch):
    probe = tmp_path / "probe"
    probe.mkdir()
    monkeypatch.setenv("GRAFT_DDP_PROBE", str(probe))
    config = load_config(
        DIGITS,
        [
            f"artifact_root={tmp_path / 'runs'}",
            f"data.cache_dir={tmp_path / 'ds'}",
            "data.image_size=8",
            "data.num_workers=0",
            f"plugins=[{PROBE}]",
            "model.family=probe-resnet",
            "pretrain.epochs=1",
            "pretrain.schedule=constant",
            "pretrain.loss=probe-ce",
            "finetune.freeze_epochs=1",
            "finetune.epochs=1",
            "finetune.schedule=constant",
            "finetune.loss=probe-ce",
            "checkpoints.every_steps=3",
            "distributed.nproc_per_node=2",
        ],
    )
    host = PluginHost(config.plugins)
    recorder = EpochRecorder()
    host.add_observer(recorder, "epoch-recorder")
    run = Run.open(config)
    for stage in ("acquire", "pretrain", "finetune"):
        execute_stage(stage, config, run, host)
    summary = run.summary()
    run_dir = Path(run.url)
    for stage in ("pretrain", "finetune"):
        assert summary[stage]["distributed"] == {"world_size": 2, "backend": "gloo"}
        rank0, rank1 = probe_records(probe, stage)
        # identical weights at every step (each forward sees the weights the previous step left) ...
        steps = [(a["state"], b["state"]) for a, b in zip(rank0["weights"], rank1["weights"], strict=True)]
        apart = [i for i, (a, b) in enumerate(steps) if a != b]
        assert not apart, f"{stage}: the ranks' weights differ from step {apart[0]} on ({len(apart)} of {len(steps)})"
        assert len({a for a, _ in steps}) == len(steps)  # ... and they do change every step
        # ... while each rank trains on its own shard
        assert all(a["batch"] != b["batch"] for a, b in zip(rank0["weights"], rank1["weights"], strict=True))
        # the epoch's train_loss is the mean over the ranks of each rank's mean loss
        history = json.loads((run_dir / stage / "history.json").read_text())
        mine, theirs = (epoch_means(r["losses"], len(history)) for r in (rank0, rank1))
        for epoch, a, b in zip(history, mine, theirs, strict=True):
            assert epoch["train_loss"] == pytest.approx((a + b) / 2, rel=1e-5)
            assert epoch["train_loss"] != pytest.approx(a, rel=1e-4)  # not rank 0's own figure
        # rank 0 writes the stage and its checkpoints; rank 1 writes nothing under the run or the store
        written = [
            [path for _, path in r["writes"] if path.startswith(str(tmp_path)) and str(probe) not in path]
            for r in (rank0, rank1)
        ]
        assert any(p.startswith(str(run_dir / "_checkpoints" / stage)) for p in written[0])
        assert written[1] == [], f"{stage}: rank 1 wrote {written[1][:5]}"
    # each rank saw half of the 628 training images per epoch: half the single-process step count
    assert summary["finetune"]["steps"] == len(probe_records(probe, "finetune")[0]["weights"]) == 2 * (628 // 64)
    assert summary["finetune"]["weights_load"]["source"] == "pretrain backbone"
    weights = load_file(str(run_dir / "finetune" / "model" / "model.safetensors"))
    assert "fc.weight" in weights and not any(k.startswith("module.") for k in weights)
    assert list(run_dir.glob("*partial*")) == []  # rank 0's stage was published whole
    # rank 0's epochs were relayed to this process as they ended, once each
    assert [(stage, epoch) for stage, epoch, _ in recorder.heard] == [("pretrain", 1), ("finetune", 1), ("finetune", 2)]
    assert all("train_loss" in names for _, _, names in recorder.heard)
