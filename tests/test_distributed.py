"""DDP on CPU: gloo, 2 processes launched through torch.distributed.run from the stage."""

import pytest
from safetensors.torch import load_file

from graftflow.core.config import load_config
from graftflow.core.hookspecs import hookimpl
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from tests.support import DIGITS

pytestmark = pytest.mark.slow


class EpochRecorder:
    """A run-time observer in this process (like the CLI's progress display)."""

    def __init__(self):
        self.heard = []

    @hookimpl
    def graft_on_epoch_end(self, run, stage, epoch, metrics):
        self.heard.append((stage, epoch, sorted(metrics)))


def test_pretrain_and_finetune_run_as_two_gloo_processes(tmp_path):
    host = PluginHost()
    recorder = EpochRecorder()
    host.add_observer(recorder, "epoch-recorder")
    config = load_config(
        DIGITS,
        [
            f"artifact_root={tmp_path / 'runs'}",
            f"data.cache_dir={tmp_path / 'ds'}",
            "data.image_size=8",
            "pretrain.epochs=2",
            "pretrain.schedule=constant",
            "finetune.freeze_epochs=1",
            "finetune.epochs=2",
            "finetune.schedule=constant",
            "distributed.nproc_per_node=2",
        ],
    )
    run = Run.open(config)
    for stage in ("acquire", "pretrain", "finetune", "evaluate"):
        execute_stage(stage, config, run, host)
    summary = run.summary()
    for stage in ("pretrain", "finetune"):
        assert summary[stage]["distributed"] == {"world_size": 2, "backend": "gloo"}
        assert summary["stages"][stage]["status"] == "completed"
    assert summary["finetune"]["weights_load"]["source"] == "pretrain backbone"
    # each rank saw half of the 628 training images per epoch: half the single-process step count
    steps = summary["finetune"]["steps"]
    assert steps == 3 * (628 // (32 * 2))
    assert summary["metrics"]["test"]["accuracy"] > 0.6
    weights = load_file(str(tmp_path / "runs" / config.name / run.run_id / "finetune" / "model" / "model.safetensors"))
    assert "fc.weight" in weights and not any(k.startswith("module.") for k in weights)
    # rank 0's epochs were relayed to this process as they ended, once each
    assert [(stage, epoch) for stage, epoch, _ in recorder.heard] == [
        ("pretrain", 1),
        ("pretrain", 2),
        ("finetune", 1),
        ("finetune", 2),
        ("finetune", 3),
    ]
    assert all("train_loss" in names for _, _, names in recorder.heard)
    rank_dirs = list((tmp_path / "runs" / config.name / run.run_id).glob("*partial*"))
    assert rank_dirs == []  # only rank 0 wrote, and its stage was published whole
