"""Issue 17: fine-tuning methods — domain adaptation (mmd, dann, cdan) and learning without forgetting (lwf).

Unit tests of the pieces (gradient reversal, domain terms, distillation), then every method through
the fine-tune stage: target labels never read, a crash resumed to the same weights, and each through
`graft run` under 2-process DDP, killed and resumed.
"""

import copy
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from graftflow.core import grad_reverse, ramp
from graftflow.core.config import load_config
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from graftflow.plugins.methods.lwf import distillation
from tests.prefect_server import BIN
from tests.support import DIGITS, ROOT, crash_at_step, untimed

TARGET = "{kind: sklearn-digits-m, size: 8}"
METHODS = {
    "mmd": [f"finetune.method={{name: mmd, target: {TARGET}}}"],
    # BatchNorm in the discriminator: its running statistics must survive a resume and DDP too
    "dann": [f"finetune.method={{name: dann, hidden: 32, batch_norm: true, target: {TARGET}}}"],
    "cdan": [f"finetune.method={{name: cdan, entropy: true, hidden: 32, target: {TARGET}}}"],
    "lwf": [
        "finetune.method={name: lwf, replay: 3}",
        "finetune.head=extend",
        "pretrain.epochs=1",
        "pretrain.schedule=constant",
    ],
}
DA = ["pretrain.enabled=false", "data.channels=3", "finetune.classes=null"]


def overrides(root: Path, method: str, *extra: str) -> list[str]:
    base = [
        f"artifact_root={root / 'runs'}",
        f"data.cache_dir={root / 'ds'}",
        "data.image_size=8",
        "augment.train=[]",
        "finetune.freeze_epochs=1",
        "finetune.epochs=1",
        "finetune.schedule=constant",
        "checkpoints.every_steps=5",
        "export.formats=[safetensors]",
    ]
    return [*base, *([] if method == "lwf" else DA), *METHODS[method], *extra]


def run_stages(root: Path, method: str, *extra: str, stages=("acquire", "pretrain", "finetune")):
    config, host = load_config(DIGITS, overrides(root, method, *extra)), PluginHost()
    run = Run.open(config)
    for stage in stages:
        execute_stage(stage, config, run, host)
    return config, host, run


def weights(run) -> dict[str, torch.Tensor]:
    return load_file(f"{run.url}/finetune/model/model.safetensors")


# --- the pieces ---------------------------------------------------------------------------------


def test_gradient_reversal_negates_and_scales_the_gradient():
    x = torch.randn(4, 3, requires_grad=True)
    out = grad_reverse(x, 0.25)
    assert torch.equal(out, x)  # the identity forward
    (out * torch.arange(3.0)).sum().backward()
    assert torch.allclose(x.grad, -0.25 * torch.arange(3.0).expand(4, 3))


def test_ramp_is_ganins_schedule():
    assert ramp(0.0) == 0.0 and ramp(1.0) == pytest.approx(2 / (1 + np.exp(-10)) - 1)
    assert all(ramp(a) < ramp(b) for a, b in zip([0, 0.1, 0.3], [0.1, 0.3, 0.9], strict=True))


def toy_domains(n=256, shift=3.0):
    g = torch.Generator().manual_seed(0)
    source = torch.randn(n, 2, generator=g)
    target = torch.randn(n, 2, generator=g) + torch.tensor([shift, 0.0])
    return source, target


def test_the_mmd_term_falls_as_features_align_on_a_toy_shift():
    """MMD² between source and target features shrinks step by step as the target's shift is taken away."""
    from graftflow.plugins.losses.domain import MMD

    source, target = toy_domains()
    mmd = MMD(bandwidths=[1.0, 2.0])  # fixed kernels, so only the features move
    shift = target.mean(0) - source.mean(0)
    values = [float(mmd(source, target - a * shift)) for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert values == sorted(values, reverse=True) and values[-1] < 0.05 * values[0]


def adversarial_features(reversal: float) -> float:
    """Train linear features against a discriminator behind gradient reversal (factor `reversal`) on the toy shift;
    return how much of the features still comes from the shifted coordinate (|W[:, 0]| / |W[:, 1]|)."""
    from graftflow.plugins.methods.adaptation import discriminator

    source, target = toy_domains()
    domains = torch.cat([torch.zeros(len(source)), torch.ones(len(target))])
    torch.manual_seed(0)
    features, critic = nn.Linear(2, 4), discriminator(4, 16, 0.0)
    opt = torch.optim.Adam(
        [{"params": features.parameters(), "lr": 0.01}, {"params": critic.parameters(), "lr": 0.001}]
    )
    for _ in range(1000):
        logits = critic(grad_reverse(features(torch.cat([source, target])), reversal)).squeeze(1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, domains)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(features.weight[:, 0].norm() / features.weight[:, 1].norm())


def test_dann_features_drop_the_shifted_coordinate():
    """With gradient reversal the features stop carrying what tells the domains apart; without it they keep it."""
    aligned, control = adversarial_features(1.0), adversarial_features(0.0)
    assert aligned < 0.1 and control > 0.5


def test_the_discriminator_takes_batch_norm_and_keeps_its_layer_names_without():
    """`batch_norm: true` puts BatchNorm1d after each hidden layer; off, the layers keep the names that
    checkpoints written before the option hold (0, 3, 6)."""
    from graftflow.plugins.methods.adaptation import discriminator

    plain, normed = discriminator(8, 16, 0.5), discriminator(8, 16, 0.0, batch_norm=True)
    assert sorted({k.split(".")[0] for k in plain.state_dict()}) == ["0", "3", "6"]
    assert sum(isinstance(m, nn.BatchNorm1d) for m in normed) == 2 and "1.running_mean" in normed.state_dict()


def test_lwf_distillation_is_zero_when_the_model_equals_its_frozen_copy():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))
    frozen = copy.deepcopy(model).requires_grad_(False)
    x = torch.randn(16, 6)
    with torch.no_grad():
        assert float(distillation(model(x), frozen(x), 2.0)) == pytest.approx(0.0, abs=1e-7)
        model[2].weight.add_(torch.randn_like(model[2].weight))
        assert float(distillation(model(x), frozen(x), 2.0)) > 1e-3  # and not once they differ


# --- through the fine-tune stage -------------------------------------------------------------------


def poison_labels(store_url: str, seed: int = 1) -> None:
    """Rewrite every label of a store in place (same images, same splits): what a method must never read."""
    rng = np.random.default_rng(seed)
    for shard in sorted(Path(store_url).rglob("*.parquet")):
        table = pq.read_table(shard)
        labels = table["label"].to_numpy()
        poisoned = (labels + 1 + rng.integers(0, 8, len(labels))) % 10
        assert (poisoned != labels).all()
        index = table.schema.get_field_index("label")
        pq.write_table(table.set_column(index, "label", pa.array(poisoned, pa.int32())), shard)


@pytest.mark.parametrize("method", ["dann"])
def test_target_labels_are_never_read_in_training(tmp_path, method):
    clean_cfg, host, clean = run_stages(tmp_path / "clean", method, stages=("acquire",))
    poisoned_cfg, _, poisoned = run_stages(tmp_path / "poisoned", method, stages=("acquire",))
    target_store = poisoned.summary()["target_data"]["path"]
    poison_labels(target_store)
    for config, run in ((clean_cfg, clean), (poisoned_cfg, poisoned)):
        execute_stage("finetune", config, run, host)
    a, b = weights(clean), weights(poisoned)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_standard_with_a_target_is_the_source_only_baseline(tmp_path):
    """`standard` may name a target domain: acquired and scored by evaluate (the baseline the adaptation
    methods are compared with), never trained on — the weights equal a run without it."""
    base = ["finetune.method=standard", "finetune.epochs=1", "finetune.freeze_epochs=0"]
    _, _, plain = run_stages(tmp_path / "plain", "dann", *base, stages=("acquire", "finetune"))
    with_target = [f"finetune.method={{name: standard, target: {TARGET}}}"]
    _, _, scored = run_stages(
        tmp_path / "scored", "dann", *base, *with_target, stages=("acquire", "finetune", "evaluate")
    )
    target = scored.summary()["metrics"]["target"]
    assert target["images"] > 0 and 0 <= target["accuracy"] <= 1 and target["entropy"] > 0
    assert "target_data" in scored.summary() and "target_data" not in plain.summary()
    a, b = weights(plain), weights(scored)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_target_on_a_method_that_takes_none_is_a_config_error(tmp_path):
    from graftflow.core.errors import ConfigError
    from graftflow.core.validation import validate_config

    config = load_config(DIGITS, [*overrides(tmp_path, "lwf"), f"finetune.method={{name: lwf, target: {TARGET}}}"])
    with pytest.raises(ConfigError, match=r"finetune\.method.*target"):
        validate_config(config, PluginHost())


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_resumes_after_a_crash_to_the_same_weights(tmp_path, monkeypatch, method):
    _, _, reference = run_stages(tmp_path / "reference", method)
    config, host, run = run_stages(tmp_path / "crashed", method, stages=("acquire", "pretrain"))
    with crash_at_step(monkeypatch, 13, "finetune", config, run, host):  # between checkpoints (every 5 steps)
        pass
    execute_stage("finetune", config, run, host)
    summary = run.summary()
    assert summary["finetune"]["resumed_from_step"] == 10 and summary["finetune"]["method"] == method
    expected, got = weights(reference), weights(run)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    assert untimed(summary["metrics"]["finetune"]) == untimed(reference.summary()["metrics"]["finetune"])


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_through_graft_run_under_ddp_killed_and_resumed(prefect_api, tmp_path, method):
    """The real CLI with 2-process DDP, killed with SIGKILL once the stage has checkpointed, then resumed
    with --run-id: the method's metrics in summary.json (target domain, or old vs new classes).
    That a resumed method ends with the very weights of an uninterrupted run is tested in-process above."""
    extra = ("distributed.nproc_per_node=2", "finetune.labels_per_class=20")  # a few steps an epoch
    sets = [a for s in overrides(tmp_path, method, *extra) for a in ("--set", s)]
    cmd = [str(BIN / "graft"), "run", str(DIGITS), *sets, "--stages", "acquire,pretrain,finetune,evaluate"]
    cmd += ["--run-id", "killed"]
    config = load_config(DIGITS, overrides(tmp_path, method, *extra))
    Run.open(config, "killed")  # --run-id continues a run that exists: make it, with the id the test watches
    ckpt_dir = tmp_path / "runs" / "digits-transfer" / "killed" / "_checkpoints" / "finetune"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not list(ckpt_dir.glob("step-*")):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = Run(config, "killed").summary()
    assert summary["finetune"]["resumed_from_step"] >= 1 and summary["finetune"]["method"] == method
    assert summary["finetune"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    metrics = summary["metrics"]
    if method == "lwf":
        inc = metrics["incremental"]
        assert inc["old_classes"] == 5 and inc["forgetting"] == pytest.approx(
            inc["accuracy_old_before"] - inc["accuracy_old"]
        )
        assert len(summary["finetune"]["classes"]) == 10  # the old head's 5, then the new 5
    else:
        assert metrics["target"]["images"] > 0 and metrics["target"]["entropy"] > 0
        assert "target_entropy" in metrics["finetune"] and "domain_loss" in metrics["finetune"]
