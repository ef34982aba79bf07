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
from tests.support import DIGITS, ROOT, crash_at_step, untimed

BASE = [
    "data.image_size=8",
    "pretrain.enabled=false",
    "finetune.freeze_epochs=1",
    "finetune.epochs=2",
    "finetune.ema=0.9",
    "checkpoints.every_steps=5",
]  # digits.yaml keeps its random-affine augmentation


def config_for(root: Path, *extra: str):
    return load_config(DIGITS, [f"artifact_root={root / 'runs'}", f"data.cache_dir={root / 'ds'}", *BASE, *extra])


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
    with crash_at_step(monkeypatch, crash_at, "finetune", config, run, host):
        assert run.summary()["stages"]["finetune"]["status"] == "failed"
        assert not (Path(run.url) / "finetune").exists()  # nothing half-written where a later stage would look
    execute_stage("finetune", config, run, host)
    weights, expected = finetuned(config, run), reference[0]
    summary = run.summary()
    assert summary["finetune"]["resumed_from_step"] == (crash_at - 1) // 5 * 5  # the last complete checkpoint
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert untimed(summary["metrics"]["finetune"]) == untimed(reference[1]["metrics"]["finetune"])
    assert not (Path(run.url) / "_checkpoints" / "finetune").exists()  # cleared once the stage succeeded


@pytest.mark.slow
def test_a_prefect_retry_of_the_stage_resumes_from_its_checkpoint(prefect_api, tmp_path, monkeypatch, reference):
    """The finetune stage's flow with Prefect retries: the first attempt dies at step 19, Prefect runs the flow
    again with the same parameters, and that attempt continues from the step-15 checkpoint to the reference
    weights (the flow of a deployment configured with `retries`, or a stage flow retried from the UI)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from graftflow.pipelines.flows import STAGE_FLOWS

    config = config_for(tmp_path)
    real, attempts = loop.GradientStep.accumulate, []

    def crashing_once(self, step_fn, images, labels, micro):
        if self.history.steps + 1 == 19 and not attempts:
            attempts.append("crashed")
            raise RuntimeError("simulated crash")
        return real(self, step_fn, images, labels, micro)

    run = Run.open(config)
    execute_stage("acquire", config, run, PluginHost())
    monkeypatch.setattr(loop.GradientStep, "accumulate", crashing_once)
    with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):  # the session's server
        STAGE_FLOWS["finetune"].with_options(retries=1, retry_delay_seconds=0)(config=config, run_id=run.run_id)
    summary = run.summary()
    assert attempts == ["crashed"] and summary["stages"]["finetune"]["status"] == "completed"
    assert summary["finetune"]["resumed_from_step"] == 15
    weights, expected = finetuned(config, run), reference[0]
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)


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
    sets = [
        a
        for o in [f"artifact_root={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'ds'}", *BASE]
        for a in ("--set", o)
    ]
    cmd = [str(BIN / "graft"), "run", str(DIGITS), *sets, "--stages", "acquire,finetune", "--run-id", "killed"]
    config = load_config(DIGITS, [f"artifact_root={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'ds'}", *BASE])
    Run.open(config, "killed")  # --run-id continues a run that exists: make it, with the id the test watches
    ckpt_dir = tmp_path / "runs" / "digits-transfer" / "killed" / "_checkpoints" / "finetune"
    kills = 0
    for target in sorted(rng.sample(range(6, 50), 3)):
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
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
    run = Run(config, "killed")
    weights, expected = finetuned(config, run), reference[0]
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert untimed(run.summary()["metrics"]["finetune"]) == untimed(reference[1]["metrics"]["finetune"])


# --- pretraining resumes too: SimCLR, and MoCo with its queue and momentum encoder ------------------

PRETEXTS = {"simclr": "pretrain.pretext=simclr", "moco": "pretrain.pretext={name: moco, queue: 48, momentum: 0.9}"}
# digits.yaml pretrains supervised with cross-entropy; the contrastive pretexts take infonce.
PRE_BASE = [
    "data.image_size=8",
    "pretrain.epochs=2",
    "pretrain.loss=infonce",
    "checkpoints.every_steps=5",
    "finetune.epochs=0",
    "finetune.freeze_epochs=0",
]


def pretrain_config(root: Path, pretext: str):
    return load_config(
        DIGITS, [f"artifact_root={root / 'runs'}", f"data.cache_dir={root / 'ds'}", *PRE_BASE, PRETEXTS[pretext]]
    )


def backbone(run) -> dict[str, torch.Tensor]:
    return load_file(f"{run.url}/pretrain/backbone/model.safetensors")


@pytest.fixture(scope="module")
def pretrained_reference(tmp_path_factory):
    """`reference(pretext)` → (backbone weights, summary) of an uninterrupted pretraining, computed once each."""
    done = {}

    def reference(pretext: str):
        if pretext not in done:
            root = tmp_path_factory.mktemp(f"ref-{pretext}")
            config, host = pretrain_config(root, pretext), PluginHost()
            run = Run.open(config)
            for stage in ("acquire", "pretrain"):
                execute_stage(stage, config, run, host)
            done[pretext] = backbone(run), run.summary()
        return done[pretext]

    return reference


@pytest.mark.parametrize("pretext", sorted(PRETEXTS))
def test_pretraining_resumes_after_a_crash_to_identical_weights(tmp_path, monkeypatch, pretrained_reference, pretext):
    expected, reference_summary = pretrained_reference(pretext)
    config, host = pretrain_config(tmp_path, pretext), PluginHost()
    run = Run.open(config)
    execute_stage("acquire", config, run, host)
    with crash_at_step(monkeypatch, 23, "pretrain", config, run, host):  # in the second epoch, between checkpoints
        assert (Path(run.url) / "_checkpoints" / "pretrain").exists()
    execute_stage("pretrain", config, run, host)
    summary = run.summary()
    assert summary["pretrain"]["resumed_from_step"] == 20
    weights = backbone(run)
    assert weights.keys() == expected.keys() and all(torch.equal(weights[k], expected[k]) for k in expected)
    assert untimed(summary["metrics"]["pretrain"]) == untimed(reference_summary["metrics"]["pretrain"])


def test_without_the_queue_in_the_checkpoint_moco_would_not_resume_identically(
    tmp_path, monkeypatch, pretrained_reference
):
    """Negative control: the same crash and resume, but the queue and key encoder start afresh → other weights."""
    from graftflow.core.training import resume

    pretext = "moco"
    expected, _ = pretrained_reference(pretext)

    config, host = pretrain_config(tmp_path, pretext), PluginHost()
    run = Run.open(config)
    execute_stage("acquire", config, run, host)
    real_restore = resume.Checkpoint.restore

    def restore_forgetting_the_queue(self):
        phase = real_restore(self)
        with torch.no_grad():
            self.model.queue.copy_(torch.nn.functional.normalize(torch.randn_like(self.model.queue), dim=1))
            self.model.synced.fill_(False)  # the key encoder is copied afresh from the query encoder
        return phase

    with crash_at_step(monkeypatch, 23, "pretrain", config, run, host):
        pass
    monkeypatch.setattr(resume.Checkpoint, "restore", restore_forgetting_the_queue)
    execute_stage("pretrain", config, run, host)
    weights = backbone(run)
    assert not all(torch.equal(weights[k], expected[k]) for k in expected)


@pytest.mark.slow
@pytest.mark.parametrize("pretext", sorted(PRETEXTS))
def test_sigkill_during_ssl_pretraining_then_resume(prefect_api, tmp_path, pretext, pretrained_reference):
    """The real CLI, killed with SIGKILL while SimCLR / MoCo pretrains, resumed with --run-id."""
    expected, reference_summary = pretrained_reference(pretext)
    sets = [
        a
        for o in [
            f"artifact_root={tmp_path / 'runs'}",
            f"data.cache_dir={tmp_path / 'ds'}",
            *PRE_BASE,
            PRETEXTS[pretext],
        ]
        for a in ("--set", o)
    ]
    cmd = [str(BIN / "graft"), "run", str(DIGITS), *sets, "--stages", "acquire,pretrain", "--run-id", "killed"]
    Run.open(pretrain_config(tmp_path, pretext), "killed")  # --run-id continues a run that exists
    ckpt_dir = tmp_path / "runs" / "digits-transfer" / "killed" / "_checkpoints" / "pretrain"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline, killed = time.monotonic() + 300, False
    while proc.poll() is None and time.monotonic() < deadline:
        steps = [int(p.name.split("-")[1]) for p in ckpt_dir.glob("step-*")] if ckpt_dir.exists() else []
        if steps and max(steps) >= 15:
            time.sleep(random.Random(pretext).uniform(0, 0.3))
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        time.sleep(0.05)
    proc.wait()
    assert killed, "pretraining ended before it could be killed"
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    run = Run(pretrain_config(tmp_path, pretext), "killed")
    assert run.summary()["pretrain"]["resumed_from_step"] >= 15
    weights = backbone(run)
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert untimed(run.summary()["metrics"]["pretrain"]) == untimed(reference_summary["metrics"]["pretrain"])
