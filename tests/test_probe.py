"""Label budgets (finetune.labels_per_class) and linear / kNN probes of a frozen backbone, through the core stages."""

import numpy as np
import pyarrow as pa

from graftflow.core.config import load_config
from graftflow.core.data.dataset import Selection, per_class_subsample
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from graftflow.core.validation import validate_config
from tests.support import DIGITS


def run_stages(stages, overrides):
    config = load_config(DIGITS, overrides)
    host = PluginHost(config.plugins)
    validate_config(config, host, stages)
    run = Run.open(config)
    for stage in stages:
        execute_stage(stage, config, run, host)
    return run.summary()


def test_per_class_subsample_is_stratified_and_fixed_by_seed():
    labels = np.array([0] * 30 + [1] * 4 + [2] * 20)
    sel = Selection(
        images=pa.array([bytes([i]) for i in range(len(labels))]), labels=labels, class_names=["a", "b", "c"]
    )
    first = per_class_subsample(sel, 10, seed=1)
    assert np.bincount(first.labels).tolist() == [10, 4, 10]  # a class with fewer keeps all of them
    again, other = per_class_subsample(sel, 10, seed=1), per_class_subsample(sel, 10, seed=2)
    assert first.images.to_pylist() == again.images.to_pylist()
    assert first.images.to_pylist() != other.images.to_pylist()
    rows = [b[0] for b in first.images.to_pylist()]
    assert all(labels[r] == label for r, label in zip(rows, first.labels, strict=True))  # images and labels stay paired


def test_knn_probe_of_the_fine_tuned_model_with_a_label_budget(tiny_overrides):
    summary = run_stages(
        ["acquire", "finetune", "evaluate"],
        tiny_overrides
        + [
            "pretrain.enabled=false",
            "finetune.labels_per_class=5",
            "finetune.freeze_epochs=0",
            "finetune.epochs=2",
            "evaluate.probe=knn",
            "evaluate.probe_k=3",
        ],
    )
    assert summary["finetune"]["images"] == 25  # 5 labelled images of each of the 5 classes
    probe = summary["metrics"]["probe"]
    assert probe["kind"] == "knn" and probe["k"] == 3 and probe["backbone"] == "finetune"
    assert probe["train_images"] == 25 and probe["images"] == summary["metrics"]["test"]["images"]
    assert probe["accuracy"] > 0.4  # 5 classes: chance is 0.2


def test_linear_probe_reads_the_pretrain_backbone_when_the_run_has_one(tiny_overrides):
    summary = run_stages(
        ["acquire", "pretrain", "finetune", "evaluate"],
        tiny_overrides
        + ["pretrain.epochs=2", "finetune.freeze_epochs=0", "finetune.epochs=1", "evaluate.probe=linear"],
    )
    probe = summary["metrics"]["probe"]
    assert probe["kind"] == "linear" and probe["backbone"] == "pretrain" and probe["features"] == 128
    assert probe["train_images"] == summary["finetune"]["images"]
    assert probe["accuracy"] > 0.6  # digits 5–9 from a body that only ever saw 0–4
