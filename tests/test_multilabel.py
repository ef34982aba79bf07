"""The multilabel task end to end: a Severstal-shaped label table (a label set per image) through `graft run`.

Real data path: the folder source reads train.csv (`target: multi`), the store
holds label sets, the fine-tune stage trains a sigmoid head with BCE, tunes one
threshold per class on the validation split and saves them in model.json, and the
evaluate stage scores mAP on held-out images against the label-frequency
baseline on the same images. `graft predict` then writes label sets.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from graftflow.plugins.losses.multilabel import Asl, FocalBce
from graftflow.plugins.tasks.ml_metrics import mean_ap, tune_thresholds
from tests.severstal_synth import competition, table_layout, write_files
from tests.support import graft


def write_competition(root: Path, n: int = 60) -> dict:
    files, truth = competition(n=n, test_images=2)
    write_files(root, files)
    return truth


def config(tmp_path: Path) -> Path:
    data = {
        "name": "steel-ml",
        "artifact_root": str(tmp_path / "runs"),
        "task": "multilabel",
        "data": {
            "cache_dir": str(tmp_path / "datasets"),
            "image_size": 32,
            "channels": 1,
            "mean": [0.5],
            "std": [0.25],
            "batch_size": 8,
            "source": {
                "kind": "folder",
                "path": str(tmp_path / "data"),
                "layout": table_layout("multi"),
            },
        },
        "model": {"family": "resnet", "variant": "tiny"},
        "finetune": {"epochs": 8, "lr": 0.01, "monitor": "val_map"},
        "export": {"formats": ["onnx"], "batch": 4},
    }
    path = tmp_path / "ml.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_multilabel_beats_the_label_frequency_baseline_with_saved_thresholds(prefect_api, tmp_path):
    write_competition(tmp_path / "data")
    run = graft("run", str(config(tmp_path)), "--stages", "acquire,finetune,evaluate,export")
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-2000:]
    run_dir = next(p for p in (tmp_path / "runs" / "steel-ml").iterdir() if not p.name.startswith("_"))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["data"]["target"] == "multi" and summary["finetune"]["loss"] == "bce"
    test = summary["metrics"]["test"]
    assert test["map"] > test["frequency_baseline_map"] + 0.1, test
    assert set(test["per_class"]) == {"1", "2", "3", "4"} and 0 <= test["micro_f1"] <= 1
    meta = json.loads((run_dir / "finetune" / "model" / "model.json").read_text())
    assert len(meta["thresholds"]) == 4 and all(0 < t < 1 for t in meta["thresholds"])
    assert test["thresholds"] == dict(zip(meta["class_names"], meta["thresholds"], strict=True))

    out = tmp_path / "labels.csv"
    from graftflow.pipelines.cli import main as graft_main  # the CLI's own code path, without a process start

    assert graft_main(["predict", str(run_dir), str(tmp_path / "data" / "test_images"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 2 and {"source", "labels", "p_1", "p_4"} <= set(rows[0])
    for row in rows:  # the label set is exactly the classes at or above their saved threshold
        chosen = {c for c, t in zip(meta["class_names"], meta["thresholds"], strict=True) if float(row[f"p_{c}"]) >= t}
        assert set(filter(None, row["labels"].split("|"))) == chosen


def test_thresholds_maximise_each_class_f1():
    probs = np.array([[0.9, 0.3], [0.8, 0.2], [0.7, 0.1], [0.6, 0.05]])
    targets = np.array([[1, 1], [1, 1], [0, 0], [0, 0]])
    assert tune_thresholds(probs, targets) == [0.8, 0.2]  # not 0.5: each class its own, best F1 (1.0) on these
    assert mean_ap(probs, targets) == 1.0
    assert tune_thresholds(np.array([[0.9], [0.7], [0.4]]), np.array([[1], [1], [0]])) == [0.5]  # ties: the lower


def test_asl_and_focal_reduce_to_bce():
    logits, targets = torch.randn(6, 4), (torch.rand(6, 4) > 0.5).float()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / 6
    assert torch.allclose(Asl(0.0, 0.0, 0.0)(logits, targets), bce, atol=1e-5)
    assert torch.allclose(FocalBce(0.0, 0.5)(logits, targets), bce / 2, atol=1e-5)
    easy = torch.full((1, 1), -6.0)  # a confident negative: ASL's margin silences it, BCE does not
    assert float(Asl(0.0, 4.0, 0.05)(easy, torch.zeros(1, 1))) == 0.0
