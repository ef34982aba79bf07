"""Issue 14: an architecture that is not built in runs end to end; then predictions out of it.

One run trains timm's `convnext_atto` through the `timm` family (acquire → finetune → evaluate →
export, in process: the real stages), and every test below reads that run: `graft predict` on a
folder of PNGs written from its held-out test images gives exactly evaluate's predictions, the ONNX
and TorchScript engines agree with eager, TTA is deterministic and recorded, the notebook API and
the predict flow (through Prefect) give the same rows, and bad input is one line.
(`models:/NAME@champion` from a real MLflow registry: tests/test_mlflow_tracking.py.)
"""

from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from graftflow.core.config import DEFAULT_TTA_VIEWS, PredictConfig, load_config
from graftflow.core.inference.predictor import load_predictor
from graftflow.core.inference.sources import open_inputs, run_store, split_inputs
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from graftflow.core.validation import validate_config
from graftflow.pipelines.cli import main as graft_main
from tests.support import DIGITS

STAGES = ["acquire", "finetune", "evaluate", "export"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("predict")
    config = load_config(
        DIGITS,
        [
            f"artifact_root={root / 'runs'}",
            f"data.cache_dir={root / 'datasets'}",
            "data.image_size=32",  # convnext downsamples 32×: its last stage needs 32 px
            "model.family=timm",
            "model.variant=convnext_atto",
            "pretrain.enabled=false",
            "augment.train=[]",
            "augment.preview=0",
            "finetune.freeze_epochs=1",
            "finetune.epochs=1",
            "finetune.lr=[0.001, 0.01]",
            "evaluate.tta=true",
            "export.formats=[onnx, torchscript]",
        ],
    )
    host = PluginHost(config.plugins)
    validate_config(config, host, STAGES)
    run = Run.open(config)
    for stage in STAGES:
        execute_stage(stage, config, run, host)
    meta = json.loads((Path(run.url) / "finetune" / "model" / "model.json").read_text())
    held_out = split_inputs(run_store(run.url, "test"), "test", meta["class_names"])
    folder = root / "incoming"
    folder.mkdir()
    for i, image in enumerate(held_out):  # the store's own encoded bytes: PNGs of the held-out images
        (folder / f"test_{i:04d}.png").write_bytes(image.read())
    (folder / "broken.png").write_bytes(b"this is not an image")
    evaluated = list(csv.DictReader((Path(run.url) / "evaluate" / "predictions.csv").open()))
    yield SimpleNamespace(root=root, config=config, run=run, folder=folder, evaluated=evaluated, held_out=held_out)
    torch.set_num_threads(threads)


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return list(csv.DictReader(path.open()))


def by_index(rows: list[dict]) -> dict[int, dict]:
    """Rows of a folder prediction keyed by the held-out index in their file name."""
    return {int(Path(r["source"]).stem.split("_")[1]): r for r in rows}


def same_as_evaluate(rows: list[dict], evaluated: list[dict], column: str = "prediction") -> bool:
    keyed = by_index(rows)
    return [keyed[int(e["index"])]["prediction"] for e in evaluated] == [e[column] for e in evaluated]


def test_a_timm_architecture_runs_end_to_end_with_discriminative_lrs(trained):
    summary = trained.run.summary()
    assert all(summary["stages"][s]["status"] == "completed" for s in STAGES)
    groups = summary["param_groups"]
    # timm's own coarse groups for ConvNeXt (group_matcher), input → head; the head norm before the classifier
    assert [g["name"] for g in groups] == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head.norm", "head"]
    lrs = np.array([g["lr"] for g in groups])
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-2)
    assert np.allclose(lrs[1:] / lrs[:-1], (1e-2 / 1e-3) ** (1 / (len(lrs) - 1)))  # geometric, like fastai's slice
    assert summary["finetune"]["phases"] == ["head", "all"]
    assert {e["format"] for e in summary["exports"]} == {"onnx", "torchscript"}
    assert all(e["max_abs_diff"] <= 1e-4 for e in summary["exports"])
    assert summary["metrics"]["test"]["accuracy"] > 0.6  # five classes: chance is 0.2


def test_evaluate_records_tta_and_the_interpretation(trained):
    test = trained.run.summary()["metrics"]["test"]
    assert test["tta"]["views"] == list(DEFAULT_TTA_VIEWS) and test["tta"]["images"] == test["images"] == 179
    assert 0 < test["tta"]["accuracy"] <= 1 and "accuracy" in test  # both ways recorded
    evaluate = Path(trained.run.url) / "evaluate"
    assert Image.open(evaluate / "top_losses.png").size[0] > 100
    # most confused pairs are the confusion matrix's largest off-diagonal cells, most frequent first
    matrix, names = np.array(test["confusion_matrix"]), list(test["per_class"])
    pairs = [(test["most_confused"][i]["actual"], test["most_confused"][i]["predicted"]) for i in range(2)]
    counts = [m["count"] for m in test["most_confused"]]
    assert counts == sorted(counts, reverse=True) and sum(counts) == matrix.sum() - np.trace(matrix)
    assert (
        matrix[names.index(pairs[0][0]), names.index(pairs[0][1])]
        == counts[0]
        == np.max(matrix - np.diag(np.diag(matrix)))
    )
    rows = trained.evaluated
    assert len(rows) == 179
    assert rows[0]["sha256"] == hashlib.sha256(trained.held_out[0].read()).hexdigest()
    right = [r for r in rows if r["prediction"] == r["label"]]
    for r in right:  # the loss is -log p(actual): for a right prediction, -log of its probability
        assert float(r["loss"]) == pytest.approx(-np.log(float(r["probability"])), abs=1e-5)
    worst = max(rows, key=lambda r: float(r["loss"]))
    assert worst["prediction"] != worst["label"] and len(right) == np.trace(matrix)


def test_graft_predict_on_a_folder_gives_evaluates_predictions(trained, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert graft_main(["predict", trained.run.url, str(trained.folder), "--out", str(out), "--top-k", "2"]) == 0
    err = capsys.readouterr().err
    assert "predicted 179 image(s) with eager" in err
    assert "1 image(s) skipped" in err and "broken.png" in err  # named, never fatal
    rows = by_index([r for r in read_rows(out)])
    assert sorted(rows) == list(range(179))
    for e in trained.evaluated:
        got = rows[int(e["index"])]
        assert got["prediction"] == e["prediction"], e
        assert float(got["probability"]) == pytest.approx(float(e["probability"]), abs=1e-5)
        assert got["class_2"] != got["prediction"] and float(got["probability_2"]) <= float(got["probability"])
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["images"] == 179 and record["skipped"] == 1 and record["engine"] == "eager"
    assert record["skipped_first"][0]["source"].endswith("broken.png")
    assert record["tta"] is False and sum(record["class_counts"].values()) == 179


@pytest.mark.parametrize("engine", ["onnx", "torchscript"])
def test_export_engines_agree_with_eager(trained, engine):
    with open_inputs([str(trained.folder)]) as images:
        eager = load_predictor(trained.run.url).predict_inputs(images)
        exported = load_predictor(trained.run.url, engine=engine).predict_inputs(images)
    assert exported.names == eager.names and len(exported) == 179
    assert np.abs(exported.probabilities - eager.probabilities).max() < 1e-4
    assert exported.classes == eager.classes


def test_cli_onnx_engine_writes_parquet(trained, tmp_path, capsys):
    out = tmp_path / "onnx.parquet"
    assert graft_main(["predict", trained.run.url, str(trained.folder), "--engine", "onnx", "--out", str(out)]) == 0
    rows = by_index(read_rows(out))
    assert [rows[int(e["index"])]["prediction"] for e in trained.evaluated] == [
        e["prediction"] for e in trained.evaluated
    ]
    assert json.loads(pq.read_schema(out).metadata[b"graftflow"])["engine"] == "onnx"
    assert "with onnx" in capsys.readouterr().err


def test_tta_is_deterministic_recorded_and_equals_evaluates(trained, tmp_path):
    outs = [tmp_path / "tta-1.csv", tmp_path / "tta-2.csv"]
    for out in outs:
        assert graft_main(["predict", trained.run.url, str(trained.folder), "--tta", "--out", str(out)]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    record = json.loads(Path(f"{outs[0]}.json").read_text())
    assert record["tta"] is True and record["tta_views"] == list(DEFAULT_TTA_VIEWS)
    rows = by_index(read_rows(outs[0]))
    for e in trained.evaluated:  # evaluate.tta scored the same views
        assert rows[int(e["index"])]["prediction"] == e["prediction_tta"]
        assert float(rows[int(e["index"])]["probability"]) == pytest.approx(float(e["probability_tta"]), abs=1e-5)


def test_notebook_api_by_run_id_takes_paths_bytes_pil_and_arrays(trained):
    predictor = load_predictor(trained.run.run_id, artifact_root=str(trained.root / "runs"))
    files = sorted(trained.folder.glob("test_000*.png"))
    by_path = predictor(files)
    assert by_path.names == [str(f) for f in files]
    expected = [trained.evaluated[i]["prediction"] for i in range(len(files))]
    assert by_path.classes == expected
    pil = [Image.open(f) for f in files]
    for other in (predictor([f.read_bytes() for f in files]), predictor(pil), predictor([np.array(p) for p in pil])):
        assert other.classes == expected
        assert np.abs(other.probabilities - by_path.probabilities).max() < 1e-6
    single = predictor(files[0])
    assert single.classes == expected[:1] and single.top_k(2)[0][0][0] == expected[0]


def test_split_of_the_runs_own_store_carries_labels(trained, tmp_path, capsys):
    out = tmp_path / "split.csv"
    root = str(trained.root / "runs")
    code = graft_main(["predict", trained.run.run_id, "--split", "test", "--artifact-root", root, "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    rows = read_rows(out)
    assert [r["prediction"] for r in rows] == [e["prediction"] for e in trained.evaluated]
    assert [r["label"] for r in rows] == [e["label"] for e in trained.evaluated]


def test_archives_globs_and_fsspec_urls_are_inputs(trained, tmp_path):
    import fsspec

    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.write(trained.folder / f"test_{i:04d}.png", f"inside/test_{i:04d}.png")
    bucket = fsspec.filesystem("memory")  # an fsspec filesystem standing in for a bucket
    for i in (20, 21):
        bucket.pipe(f"/graft-predict-bucket/new/test_{i:04d}.png", (trained.folder / f"test_{i:04d}.png").read_bytes())
    predictor = load_predictor(trained.run.url)
    inputs = [str(archive), str(trained.folder / "test_001[0-2].png"), "memory://graft-predict-bucket/new/*.png"]
    with open_inputs(inputs) as images:
        got = predictor.predict_inputs(images)
    assert got.names[:3] == [f"{archive}!inside/test_{i:04d}.png" for i in range(3)]
    assert [Path(n).name for n in got.names[3:6]] == ["test_0010.png", "test_0011.png", "test_0012.png"]
    # named as fsspec names them: the memory filesystem's paths start at its root, hence the third slash
    assert got.names[6:] == [f"memory:///graft-predict-bucket/new/test_{i:04d}.png" for i in (20, 21)]
    assert got.classes == [trained.evaluated[i]["prediction"] for i in (0, 1, 2, 10, 11, 12, 20, 21)]


def test_bad_model_and_input_are_one_line(trained, tmp_path, capsys):
    model_only = tmp_path / "model"  # a model folder outside any run: no exports to run
    model_only.mkdir()
    for name in ("model.json", "model.safetensors"):
        (model_only / name).write_bytes((Path(trained.run.url) / "finetune" / "model" / name).read_bytes())
    root = str(trained.root / "runs")
    cases = [
        (["nope-123", str(trained.folder), "--artifact-root", root], "error: MODEL: 'nope-123' is not a run id"),
        ([str(model_only), str(trained.folder), "--engine", "onnx"], "error: --engine onnx: "),
        ([trained.run.url, str(tmp_path / "missing")], "error: INPUT: "),
        ([trained.run.url, str(trained.folder), "--out", str(tmp_path / "x.txt")], "error: --out: "),
        ([str(model_only), "--split", "test"], "error: --split: the model is not inside a run folder"),
        ([trained.run.url], "error: INPUT: name images"),
        (["models:/cnx@champion", str(trained.folder)], "error: MODEL: 'models:/cnx@champion': no model store serves"),
    ]
    for args, message in cases:
        assert graft_main(["predict", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message), (args, err)
    assert load_predictor(str(model_only))(trained.folder / "test_0000.png").classes == [
        trained.evaluated[0]["prediction"]
    ]


def test_predict_flow_scores_a_folder_into_a_run_of_its_own(prefect_harness, trained, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from graftflow.pipelines.flows import predict

    scores = tmp_path / "bucket" / "scores.parquet"
    settings = PredictConfig(model="latest", inputs=[str(trained.folder)], out=str(scores), top_k=1)
    config = trained.config.model_copy(update={"predict": settings})
    result = predict(config=config)
    run_dir = Path(result["url"]).parent  # the stage's folder, inside the new run
    assert run_dir.parent == Path(trained.run.url).parent and run_dir != Path(trained.run.url)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["stages"]) == ["predict"] and summary["stages"]["predict"]["status"] == "completed"
    record = summary["predict"]
    assert record["model"] == trained.run.url and record["images"] == 179 and record["skipped"] == 1
    assert record["out"] == str(scores) and scores.exists() and Path(f"{scores}.json").exists()
    rows = by_index(read_rows(scores))
    assert [rows[int(e["index"])]["prediction"] for e in trained.evaluated] == [
        e["prediction"] for e in trained.evaluated
    ]
    assert (run_dir / "predict" / "predictions.parquet").read_bytes() == scores.read_bytes()
    with get_client(sync_client=True) as client:
        keys = ["digits-transfer-predictions", "digits-transfer-predicted-classes"]
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    assert {a.key for a in found} == set(keys)
