"""Resume and DDP for the segmentation and multilabel tasks (issue 16), as tests/test_resume.py and
tests/test_distributed.py check them for classification.

A fine-tune killed mid-run and resumed from its last complete checkpoint must end with exactly the
weights of the uninterrupted run: EMA on for both tasks, and CutMix on for segmentation (its box and
λ come from the RNGs the checkpoint restores, and it cuts the masks with the images). Under 2-process
gloo DDP both tasks train on their shards and publish one model.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from graftflow.core.config import load_config
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from tests.severstal_synth import competition, table_layout, write_files
from tests.support import crash_at_step, untimed

TASKS = {
    "segmentation": {
        "task": {"name": "segmentation", "encoder_depth": 3, "decoder_channels": [16, 8, 8]},
        "model": {"family": "timm", "variant": "test_resnet"},
        "augment": {"train": ["horizontal-flip", "cutmix"], "preview": 0},
        "monitor": "val_dice",
        "target": "mask",
    },
    "multilabel": {
        "task": "multilabel",
        "model": {"family": "resnet", "variant": "tiny"},
        "augment": {"train": ["horizontal-flip"], "preview": 0},
        "monitor": "val_map",
        "target": "multi",
    },
}


@pytest.fixture(scope="module")
def steel(tmp_path_factory) -> Path:
    """24 Severstal-shaped images (32×64, masks as RLE in train.csv), written once for every test here."""
    root = tmp_path_factory.mktemp("steel")
    write_files(root, competition(n=24, test_images=0)[0])
    return root


def config_for(task: str, steel: Path, root: Path, *sets: str):
    spec = TASKS[task]
    layout = table_layout(spec["target"])
    data = {
        "name": f"steel-{task}",
        "artifact_root": str(root / "runs"),
        "task": spec["task"],
        "data": {
            "cache_dir": str(root / "datasets"),
            "image_size": 32,
            "channels": 1,
            "mean": [0.5],
            "std": [0.25],
            "batch_size": 4,
            "num_workers": 0,
            "split": {"val": 0.25, "test": 0.1},
            "source": {"kind": "folder", "path": str(steel), "layout": layout},
        },
        "model": spec["model"],
        "augment": spec["augment"],
        "pretrain": {"enabled": False},
        "finetune": {
            "freeze_epochs": 1,
            "epochs": 2,
            "lr": 0.003,
            "ema": 0.9,
            "monitor": spec["monitor"],
            "schedule": "cosine",
        },
        "checkpoints": {"every_steps": 3},
        "export": {"formats": []},
    }
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{task}.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, list(sets))


def finetuned(run) -> dict[str, torch.Tensor]:
    return load_file(f"{run.url}/finetune/model/model.safetensors")


@pytest.mark.slow  # two fine-tunes and a resumed one: ~10 s each quiet, 20–25 s on the shared cores
@pytest.mark.parametrize("task", list(TASKS))
def test_a_killed_task_fine_tune_resumes_to_the_uninterrupted_weights(task, steel, tmp_path, monkeypatch):
    host = PluginHost()
    reference_config = config_for(task, steel, tmp_path / "reference")
    reference = Run.open(reference_config)
    for stage in ("acquire", "finetune"):
        execute_stage(stage, reference_config, reference, host)
    expected, expected_summary = finetuned(reference), reference.summary()
    steps = expected_summary["finetune"]["steps"]
    crash_at = steps // 2 + 1 if (steps // 2) % 3 else steps // 2 + 2  # mid-run, past a checkpoint, not on one
    assert steps >= 6

    config = config_for(task, steel, tmp_path / "crashed")
    run = Run.open(config)
    execute_stage("acquire", config, run, host)
    with crash_at_step(monkeypatch, crash_at, "finetune", config, run, host):
        pass
    execute_stage("finetune", config, run, host)
    summary = run.summary()
    assert summary["finetune"]["resumed_from_step"] == (crash_at - 1) // 3 * 3 > 0
    assert TASKS[task]["monitor"] in summary["metrics"]["finetune"]  # validated, so best-epoch state was resumed too
    weights = finetuned(run)
    assert weights.keys() == expected.keys()
    different = [k for k in expected if not torch.equal(weights[k], expected[k])]
    assert not different, f"{task}: {len(different)} tensors differ after resuming, first {different[:3]}"
    assert untimed(summary["metrics"]["finetune"]) == untimed(expected_summary["metrics"]["finetune"])


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_a_task_fine_tunes_under_two_gloo_processes(task, steel, tmp_path):
    config = config_for(task, steel, tmp_path, "distributed.nproc_per_node=2", "finetune.ema=null")
    host = PluginHost()
    run = Run.open(config)
    for stage in ("acquire", "finetune"):
        execute_stage(stage, config, run, host)
    summary = run.summary()
    ft = summary["finetune"]
    assert ft["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert ft["task"] == task
    per_rank = ft["images"] // 2 // 4  # each rank's shard, in batches of 4 (drop_last)
    assert ft["steps"] == 3 * per_rank  # one head-only epoch and two more, on half the data each
    metrics = summary["metrics"]["finetune"]
    assert TASKS[task]["monitor"] in metrics and 0.0 <= metrics[TASKS[task]["monitor"]] <= 1.0
    weights = finetuned(run)
    assert not any(k.startswith("module.") for k in weights) and all(torch.isfinite(v).all() for v in weights.values())


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TASKS))
def test_self_supervised_pretraining_reads_mask_and_label_set_stores(task, steel, tmp_path):
    """SimCLR needs images only: it pretrains on the task's own store (masks or label sets left out, CutMix on
    segmentation's unlabelled batches mixing images alone), and the fine-tune starts from its backbone."""
    sets = ["pretrain.enabled=true", "pretrain.pretext=simclr", "pretrain.epochs=1", "pretrain.batch_size=8"]
    config = config_for(task, steel, tmp_path, *sets, "finetune.epochs=1", "finetune.ema=null")
    host = PluginHost()
    run = Run.open(config)
    for stage in ("acquire", "pretrain", "finetune"):
        execute_stage(stage, config, run, host)
    summary = run.summary()
    assert summary["pretrain"]["labels_used"] is False and summary["pretrain"]["images"] > 0
    assert summary["metrics"]["pretrain"]["train_loss"] > 0
    assert summary["finetune"]["weights_load"]["source"] == "pretrain backbone"


@pytest.mark.parametrize("task", list(TASKS))
def test_a_labelled_pretext_on_a_mask_or_label_set_store_is_refused_at_config_check(task, steel, tmp_path):
    from graftflow.core.errors import ConfigError
    from graftflow.core.validation import validate_config

    host = PluginHost()
    ok = config_for(task, steel, tmp_path, "pretrain.enabled=true", "pretrain.pretext=simclr")
    validate_config(ok, host)
    config = config_for(task, steel, tmp_path, "pretrain.enabled=true", "pretrain.pretext=supervised")
    with pytest.raises(ConfigError) as info:
        validate_config(config, host)
    target = "mask" if task == "segmentation" else "multi"
    line = (
        f"pretrain.pretext: 'supervised' trains on one class per image, and task '{task}' reads {target} stores; "
        "use a self-supervised pretext ("
    )
    assert line in str(info.value) and "simclr" in str(info.value)
