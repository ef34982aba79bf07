"""Issue 9: a crashed training stage resumes from its last complete checkpoint to the very same weights."""

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import graftflow.core.training.loop as loop
from graftflow.core.config import load_config
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from graftflow.core.training.checkpointing import COMPLETE, Checkpointer
from tests.prefect_server import BIN
from tests.support import DIGITS, ROOT

BASE = ["data.image_size=8", "pretrain.enabled=false", "finetune.freeze_epochs=1", "finetune.epochs=2",
        "finetune.ema=0.9", "checkpoints.every_steps=5"]  # digits.yaml keeps its random-affine augmentation


def config_for(root: Path, *extra: str):
    return load_config(DIGITS, [f"artifact_root={root / 'runs'}", f"data.cache_dir={root / 'ds'}", *BASE, *extra])


def untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "seconds"}


def finetuned(config, run) -> dict[str, torch.Tensor]:
    return load_file(f"{run.url}/finetune/model/model.safetensors")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    config, host = config_for(root), PluginHost()
    run = Run.open(config)
    for stage in ("acquire", "finetune"):
        execute_stage(stage, config, run, host)
    return finetuned(config, run), run.summary()


@pytest.mark.parametrize("crash_at", [7, 19, 41])  # mid-epoch, at an epoch's last step, in the last phase
def test_resume_after_a_crash_gives_identical_weights(tmp_path, monkeypatch, reference, crash_at):
    config, host = config_for(tmp_path), PluginHost()
    run = Run.open(config)
    execute_stage("acquire", config, run, host)
    real = loop._forward_backward

    def crashing(step_fn, images, labels, optimizer, policy, scaler, history):
        if history.steps + 1 == crash_at:
            raise RuntimeError("simulated crash")
        return real(step_fn, images, labels, optimizer, policy, scaler, history)

    monkeypatch.setattr(loop, "_forward_backward", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        execute_stage("finetune", config, run, host)
    assert run.summary()["stages"]["finetune"]["status"] == "failed"
    assert not (Path(run.url) / "finetune").exists()  # nothing half-written where a later stage would look
    monkeypatch.setattr(loop, "_forward_backward", real)
    execute_stage("finetune", config, run, host)
    weights, expected = finetuned(config, run), reference[0]
    summary = run.summary()
    assert summary["finetune"]["resumed_from_step"] == (crash_at - 1) // 5 * 5  # the last complete checkpoint
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert untimed(summary["metrics"]["finetune"]) == untimed(reference[1]["metrics"]["finetune"])
    assert not (Path(run.url) / "_checkpoints" / "finetune").exists()  # cleared once the stage succeeded


def test_incomplete_checkpoints_are_never_loaded(tmp_path):
    ckpt = Checkpointer(str(tmp_path / "ck"), every_steps=1)
    ckpt.save(3, {"w": torch.ones(2)}, {"step": 3})
    partial = tmp_path / "ck" / "step-00000009"
    partial.mkdir()
    (partial / "tensors.safetensors").write_bytes(b"\x00" * 10)  # a write cut short: no COMPLETE marker
    hidden = tmp_path / "ck" / ".step-00000012.partial-1234"  # a staging dir killed before its rename
    hidden.mkdir()
    (hidden / COMPLETE).write_text("12")
    step, tensors, state = ckpt.latest()
    assert step == 3 and torch.equal(tensors["w"], torch.ones(2)) and state == {"step": 3}


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume(prefect_api, tmp_path, reference):
    """The real CLI, killed with SIGKILL while it trains, resumed with --run-id, three times."""
    rng = random.Random(int(os.environ.get("GRAFT_KILL_SEED", "0")))
    sets = [a for o in [f"artifact_root={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'ds'}", *BASE]
            for a in ("--set", o)]
    cmd = [str(BIN / "graft"), "run", str(DIGITS), *sets, "--stages", "acquire,finetune", "--run-id", "killed"]
    ckpt_dir = tmp_path / "runs" / "digits-transfer" / "killed" / "_checkpoints" / "finetune"
    kills = 0
    for target in sorted(rng.sample(range(6, 50), 3)):
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            steps = [int(p.name.split("-")[1]) for p in ckpt_dir.glob("step-*")] if ckpt_dir.exists() else []
            if steps and max(steps) >= target:
                time.sleep(rng.uniform(0, 0.5))  # land anywhere: mid-step, mid-checkpoint-write
                os.killpg(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.05)
        proc.wait()
    assert kills >= 2
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    config = load_config(DIGITS, [f"artifact_root={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'ds'}", *BASE])
    run = Run(config, "killed")
    weights, expected = finetuned(config, run), reference[0]
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert untimed(run.summary()["metrics"]["finetune"]) == untimed(reference[1]["metrics"]["finetune"])
