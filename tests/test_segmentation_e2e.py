"""Severstal end to end: a segmentation competition through the real `kaggle` client, `graft run` and `graft predict`.

The stand-in (tests/kaggle_standin.py) serves a Severstal-shaped competition whose
defects are drawn shapes with their exact RLE in train.csv (tests/severstal_synth.py).
`graft run` (a real process, through Prefect, against the session's test server) acquires it into a
mask store, fine-tunes a U-Net over a timm encoder, evaluates Dice against the
empty-mask baseline on the same test images, and exports TorchScript and ONNX,
verified against eager. `graft predict --format kaggle-rle` (the CLI, in this process) then
writes a submission whose every row decodes back to the masks the model predicts, and
a prediction gallery beside it.
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
from PIL import Image

from graftflow.core.data.masks import rle_decode
from graftflow.core.data.store import read_info, read_table
from tests.kaggle_standin import KaggleStandIn
from tests.severstal_synth import HEIGHT, WIDTH, competition, table_layout
from tests.support import graft

COMP = "severstal-steel-defect-detection"
LAYOUT = table_layout("mask")


def steel_config(tmp_path: Path) -> Path:
    config = {
        "name": "steel",
        "artifact_root": str(tmp_path / "runs"),
        "seed": 0,
        "task": {"name": "segmentation", "encoder_depth": 3, "decoder_channels": [32, 16, 16], "min_area": 0.01},
        "data": {
            "cache_dir": str(tmp_path / "datasets"),
            "image_size": 32,
            "channels": 1,
            "mean": [0.5],
            "std": [0.25],
            "batch_size": 8,
            "source": {
                "kind": "kaggle",
                "competition": COMP,
                "download_dir": str(tmp_path / "downloads"),
                "layout": LAYOUT,
            },
        },
        "model": {"family": "timm", "variant": "test_resnet"},
        "augment": {"train": [{"name": "horizontal-flip"}]},
        "finetune": {"epochs": 8, "lr": 0.003, "monitor": "val_dice"},
        "export": {"formats": ["torchscript", "onnx"], "batch": 4},
    }
    path = tmp_path / "steel.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def standin(tmp_path):
    server = KaggleStandIn().start()
    yield server
    server.stop()


def _run_dir(tmp_path: Path) -> Path:
    return next(p for p in (tmp_path / "runs" / "steel").iterdir() if not p.name.startswith("_"))


@pytest.mark.slow
def test_severstal_segmentation_end_to_end(prefect_api, standin, tmp_path):
    files, truth = competition(n=60, test_images=3)
    standin.add_competition(COMP, files)
    (tmp_path / "kaggle-config").mkdir()
    env = {**standin.env(), "KAGGLE_CONFIG_DIR": str(tmp_path / "kaggle-config")}
    env["KAGGLE_API_TOKEN"] = None

    run = graft("run", str(steel_config(tmp_path)), "--stages", "acquire,augment,finetune,evaluate,export", env=env)
    assert run.returncode == 0, run.stderr[-3000:] + run.stdout[-2000:]
    assert "Traceback" not in run.stderr
    run_dir = _run_dir(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())

    # acquire: a mask store whose masks are exactly the drawn ones, at each image's own size
    info = read_info(summary["data"]["path"])
    assert info.target == "mask" and info.class_names == ["1", "2", "3", "4"] and info.rows == 60
    table = read_table(info.url)
    from graftflow.core.data.masks import decode_mask

    for source, mask in zip(table["source"].to_pylist(), table["mask"].to_pylist(), strict=True):
        name = source.rsplit("/", 1)[1]
        stored = decode_mask(mask, 4)
        expected = np.stack([truth[name].get(c, np.zeros((HEIGHT, WIDTH), bool)) for c in (1, 2, 3, 4)])
        assert stored.shape == (4, HEIGHT, WIDTH) and (stored == expected).all(), name

    # augment: the preview overlays masks on the images, as the sample ops move both (horizontal flips)
    preview = Image.open(run_dir / "augment" / "preview.png")
    assert preview.mode == "RGB" and len(set(np.asarray(preview).reshape(-1, 3)[:, 0].tolist())) > 2

    # fine-tune: a timm encoder under smp's U-Net, with encoder stages → decoder → head as its groups
    ft = summary["finetune"]
    assert ft["task"] == "segmentation" and ft["loss"] == "bce-dice" and ft["monitor"] == "val_dice"
    groups = [g["name"] for g in summary["param_groups"]]
    assert groups[0].startswith("encoder.") and groups[-2:] == ["decoder", "head"], groups
    model_meta = json.loads((run_dir / "finetune" / "model" / "model.json").read_text())
    assert model_meta["task"]["name"] == "segmentation"

    # evaluate: Dice above predicting no defect at all, on the same test images, both recorded
    test = summary["metrics"]["test"]
    assert test["images"] == summary["data"]["split_counts"]["test"]
    assert test["mean_dice"] > test["empty_baseline_dice"], test
    assert set(test["per_class"]) == {"1", "2", "3", "4"} and 0 <= test["mean_iou"] <= 1
    overlay = Image.open(run_dir / "evaluate" / "mask_overlay.png")
    assert overlay.mode == "RGB" and overlay.size[0] > overlay.size[1] / 8

    # export: both formats verified against eager
    assert {e["format"] for e in summary["exports"]} == {"torchscript", "onnx"}
    assert all(e["max_abs_diff"] <= 1e-4 for e in summary["exports"])

    # predict: a Kaggle submission that decodes back to exactly the masks the model predicts
    (tmp_path / "test_images").mkdir()
    for name, data in files.items():
        if name.startswith("test_images/"):
            (tmp_path / name).write_bytes(data)
    out = tmp_path / "submission.csv"
    from graftflow.pipelines.cli import main as graft_main  # the CLI's own code path, without a process start

    assert (
        graft_main(
            ["predict", str(run_dir), str(tmp_path / "test_images"), "--format", "kaggle-rle", "--out", str(out)]
        )
        == 0
    )
    # the prediction gallery beside the submission: each test image with its predicted masks overlaid
    gallery = Image.open(tmp_path / "submission.gallery.png")
    assert gallery.mode == "RGB" and gallery.size[0] >= 3 * WIDTH  # three images at their own size, in a row
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == ["ImageId", "EncodedPixels", "ClassId"] and len(rows) == 3 * 4
    assert any(row["EncodedPixels"] for row in rows)  # the model does predict defects
    expected_masks = eager_masks(run_dir, tmp_path / "test_images", model_meta)
    for row in rows:
        decoded = rle_decode(row["EncodedPixels"], (HEIGHT, WIDTH))
        assert (decoded == expected_masks[row["ImageId"]][model_meta["class_names"].index(row["ClassId"])]).all()

    # the predict stage (what the predict flow runs) writes the same submission, run in this process
    from graftflow.core.config import load_config
    from graftflow.core.plugin_manager import PluginHost
    from graftflow.core.runs import Run
    from graftflow.core.stages.base import execute_stage

    sets = [f"predict.model={run_dir}", f"predict.inputs=[{tmp_path / 'test_images'}]"]
    config = load_config(steel_config(tmp_path), sets)
    entry = execute_stage("predict", config, Run.open(config), PluginHost())
    assert entry["status"] == "completed"
    staged = Path(config.artifact_root) / "steel"
    written = [p for p in staged.glob("*/predict/predictions.csv")]
    assert len(written) == 1 and written[0].read_text() == out.read_text()
    # the same gallery, registered as an image artifact (what the flow turns into a Prefect artifact)
    assert entry["outputs"]["gallery"] == "gallery.png"
    assert (written[0].parent / "gallery.png").read_bytes() == (tmp_path / "submission.gallery.png").read_bytes()
    images = {a.key: a for a in entry["artifacts"] if a.kind == "image"}
    assert images["prediction-gallery"].path == "gallery.png"


def eager_masks(run_dir: Path, folder: Path, meta: dict) -> dict[str, np.ndarray]:
    """The fine-tuned model's masks for each image, computed here: decode, resize, normalise, U-Net, resize back,
    threshold 0.5, masks under min_area emptied (what the segmentation task says predict does)."""
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms import v2

    from graftflow.core import open_model

    model = open_model(str(run_dir / "finetune" / "model"))[0].eval()
    out = {}
    for path in sorted(folder.iterdir()):
        pixels = decode_image(torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8), ImageReadMode.GRAY)
        x = v2.Resize((32, 32), antialias=True)(pixels)[None].float() / 255
        x = (x - meta["mean"][0]) / meta["std"][0]
        with torch.no_grad():
            logits = torch.nn.functional.interpolate(model(x), size=pixels.shape[-2:], mode="bilinear")
        masks = (logits[0].sigmoid() > 0.5).numpy()
        masks[masks.mean(axis=(1, 2)) < 0.01] = False  # min_area 0.01: specks under 1 % of the image are dropped
        out[path.name] = masks
    return out
