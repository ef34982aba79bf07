"""Self-supervised pretraining hands its backbone to fine-tuning: through the Prefect flows, and from files."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file
from sklearn.datasets import load_digits

from graftflow.core.config import load_config
from graftflow.core.errors import StageError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from tests.support import DIGITS


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.slow
def test_simclr_ignores_labels_and_its_backbone_reaches_finetuning(prefect_harness, tiny_overrides):
    from graftflow.pipelines.flows import transfer

    config = load_config(
        DIGITS,
        tiny_overrides
        + [
            "pretrain.pretext={name: simclr, proj_dim: 32}",
            "pretrain.loss={name: infonce, temperature: 0.3}",
            "pretrain.classes=null",
            "pretrain.epochs=2",
            "pretrain.batch_size=128",
            "finetune.classes=null",
            "finetune.labels_per_class=10",
            "evaluate.probe=knn",
            "evaluate.probe_k=5",
        ],
    )
    result = transfer(config=config, stages=["acquire", "pretrain", "finetune", "evaluate"])
    run_dir = Path(result["url"])
    summary = summary_of(run_dir)
    assert all(summary["stages"][s]["status"] == "completed" for s in ("acquire", "pretrain", "finetune", "evaluate"))
    pre = summary["pretrain"]
    assert pre["pretext"] == "simclr" and pre["labels_used"] is False and pre["loss"] == "infonce"
    assert pre["classes"] == [str(d) for d in range(10)] and pre["images"] == summary["data"]["split_counts"]["train"]
    meta = json.loads((run_dir / "pretrain" / "backbone" / "model.json").read_text())
    assert meta["num_classes"] == 0 and meta["pretext"] == "simclr" and meta["head_keys"] == []
    backbone = load_file(str(run_dir / "pretrain" / "backbone" / "model.safetensors"))
    assert not any(k.startswith(("projector", "fc.")) for k in backbone)  # only the backbone is handed over
    load = summary["finetune"]["weights_load"]
    assert load["source"] == "pretrain backbone" and load["loaded"] == len(backbone)
    assert load["missing"] == ["fc.bias", "fc.weight"] and load["unexpected"] == [] and load["dropped_head"] == []
    assert summary["finetune"]["images"] == 100  # 10 labels for each of the 10 digits
    probe = summary["metrics"]["probe"]
    assert probe["backbone"] == "pretrain" and probe["train_images"] == 100 and 0 < probe["accuracy"] <= 1
    assert summary["metrics"]["test"]["images"] == probe["images"]


@pytest.mark.slow
def test_simmim_pretrains_a_vit_on_a_separate_unlabelled_folder(prefect_harness, tiny_overrides, tmp_path):
    from graftflow.pipelines.flows import transfer

    unlabelled = tmp_path / "unlabelled" / "all"
    unlabelled.mkdir(parents=True)
    for i, image in enumerate(load_digits().images[-60:]):
        buffer = io.BytesIO()
        Image.fromarray(np.uint8(image * 255 / 16), mode="L").save(buffer, format="PNG")
        (unlabelled / f"{i}.png").write_bytes(buffer.getvalue())
    config = load_config(
        DIGITS,
        tiny_overrides
        + [
            "model.family=vit",
            "model.variant=micro",
            "pretrain.pretext={name: simmim, mask_ratio: 0.5}",
            "pretrain.loss=null",
            "pretrain.classes=null",
            f"pretrain.source={{kind: folder, path: {tmp_path / 'unlabelled'}}}",
            "pretrain.epochs=2",
            "pretrain.batch_size=16",
        ],
    )
    result = transfer(config=config, stages=["acquire", "pretrain", "finetune"])
    summary = summary_of(Path(result["url"]))
    assert summary["pretrain_data"]["rows"] == 60 and summary["data"]["rows"] > 1000
    pre = summary["pretrain"]
    assert pre["data"] == "pretrain_dataset" and pre["images"] == 60 and pre["loss"] is None
    load = summary["finetune"]["weights_load"]
    assert load["source"] == "pretrain backbone" and load["loaded"] > 20 and load["unexpected"] == []
    assert load["missing"] == ["head.bias", "head.weight"]


def test_model_weights_from_a_file_report_the_load_and_refuse_other_shapes(tiny_overrides, tmp_path):
    from graftflow.core.models.build import build_model
    from graftflow.core.models.weights import save_model

    host = PluginHost()
    meta = {"family": "resnet", "variant": "small", "params": {}, "num_classes": 3, "in_chans": 1, "image_size": 8}
    save_model(build_model(host, meta), tmp_path / "small", meta)
    save_model(build_model(host, {**meta, "variant": "tiny"}), tmp_path / "tiny", {**meta, "variant": "tiny"})
    base = tiny_overrides + ["pretrain.enabled=false", "finetune.freeze_epochs=0", "finetune.epochs=1"]

    config = load_config(DIGITS, base + [f"model.weights={tmp_path / 'tiny' / 'model.safetensors'}"])
    run = Run.open(config)
    for stage in ("acquire", "finetune"):
        execute_stage(stage, config, run, host)
    load = run.summary()["finetune"]["weights_load"]
    assert load["source"].endswith("tiny/model.safetensors") and load["loaded"] > 50
    assert load["dropped_head"] == ["fc.bias", "fc.weight"] and load["unexpected"] == []

    config = load_config(DIGITS, base + [f"model.weights={tmp_path / 'small' / 'model.safetensors'}"])
    run = Run.open(config)
    execute_stage("acquire", config, run, host)
    with pytest.raises(StageError, match=r"shape mismatch for '.*': checkpoint \(\d+.*\) vs model \(\d+.*\)"):
        execute_stage("finetune", config, run, host)
    assert run.summary()["stages"]["finetune"]["status"] == "failed"
