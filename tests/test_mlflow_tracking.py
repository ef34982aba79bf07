"""The MLflow tracker against a real `mlflow server` on loopback, and `models:/NAME@champion` back as a model.

Two runs of the demo transfer (stages in-process, the plugin named in `plugins:`): a pretrained,
fine-tuned one first, then a head-only one that cannot match it. Both runs' per-epoch metrics are
in the tracking server with their steps, both models are versions of `digits-transfer`, and
`champion` went to the first and stayed there (the second was compared and lost). The model store
fetches `models:/digits-transfer@champion` to a folder graftflow loads: the first run's weights, and
`graft predict` / `load_predictor` of that URI predict what the first run's own model does.
"""

import csv
import json
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from graftflow.core.config import load_config
from graftflow.core.inference.predictor import load_predictor
from graftflow.core.inference.sources import run_store, split_inputs
from graftflow.core.model_stores import resolve_model_uri
from graftflow.core.models.saved import read_model
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from graftflow.pipelines.cli import main as graft_main
from tests.prefect_server import BIN, free_port
from tests.support import DIGITS

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow

PLUGIN = "graftflow.plugins.trackers.mlflow"
MODEL = "digits-transfer"


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    """`mlflow server` with a SQLite backend and served artifacts, on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
        try:
            if httpx.get(f"{uri}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "mlflow server did not start"
        time.sleep(0.5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)  # what `graft predict models:/...` reads the registry from
        yield uri
    proc.terminate()
    proc.wait(30)
    log.close()


def demo_run(tmp_path, uri, *extra) -> Run:
    config = load_config(
        DIGITS,
        [
            f"artifact_root={tmp_path / 'runs'}",
            f"data.cache_dir={tmp_path / 'ds'}",
            "data.image_size=8",
            "pretrain.epochs=2",
            "pretrain.schedule=constant",
            "finetune.schedule=constant",
            f"plugins=[{PLUGIN}]",
            f"tracking.uri={uri}",
            "tracking.promote={metric: test.macro_f1}",
            *extra,
        ],
    )
    run, host = Run.open(config), PluginHost(config.plugins)
    for stage in (
        ("acquire", "pretrain", "finetune", "evaluate")
        if config.pretrain.enabled
        else ("acquire", "finetune", "evaluate")
    ):
        execute_stage(stage, config, run, host)
    return run


def test_two_demo_runs_are_tracked_and_the_better_one_is_champion(tracking_uri, tmp_path):
    strong = demo_run(tmp_path, tracking_uri, "finetune.freeze_epochs=1", "finetune.epochs=2")
    weak = demo_run(tmp_path, tracking_uri, "pretrain.enabled=false", "finetune.freeze_epochs=1", "finetune.epochs=0")
    f1 = {r.run_id: r.summary()["metrics"]["test"]["macro_f1"] for r in (strong, weak)}
    assert f1[strong.run_id] > f1[weak.run_id] + 0.2, f1

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("digits-transfer")
    runs = {r.data.tags["graft.run_id"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {strong.run_id, weak.run_id}
    for run in (strong, weak):
        tracked = runs[run.run_id]
        epochs = run.summary()["finetune"]["epochs_run"]
        history = client.get_metric_history(tracked.info.run_id, "finetune/val_accuracy")
        assert [m.step for m in history] == list(range(1, epochs + 1))
        assert tracked.data.metrics["test.macro_f1"] == pytest.approx(f1[run.run_id])
        assert tracked.data.params["finetune.epochs"] == str(run.config.finetune.epochs)
        assert tracked.data.params["data.image_size"] == "8"
        artifacts = {a.path for a in client.list_artifacts(tracked.info.run_id)}
        assert {"summary.json", "acquire", "evaluate", "finetune"} <= artifacts, artifacts
        assert "finetune/curves.png" in {a.path for a in client.list_artifacts(tracked.info.run_id, "finetune")}
        assert {a.path for a in client.list_artifacts(tracked.info.run_id, "evaluate")} == {
            "evaluate/confusion_matrix.png",
            "evaluate/top_losses.png",  # evaluate's top-losses gallery (issue 14)
        }
    pretrain_steps = client.get_metric_history(runs[strong.run_id].info.run_id, "pretrain/train_loss")
    assert [m.step for m in pretrain_steps] == [1, 2]

    versions = {v.run_id: v for v in client.search_model_versions(f"name = '{MODEL}'")}
    assert set(versions) == {runs[strong.run_id].info.run_id, runs[weak.run_id].info.run_id}
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.run_id == runs[strong.run_id].info.run_id  # set by the first run, kept against the second
    info = mlflow.models.get_model_info(f"models:/{MODEL}@champion")
    assert info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 1, 8, 8)
    assert info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 5)
    assert info.saved_input_example_info is not None

    host = PluginHost([PLUGIN])
    folder = resolve_model_uri(host, f"models:/{MODEL}@champion", tmp_path / "fetched")
    model, meta = read_model(host, folder, "model")
    want = load_file(f"{strong.url}/finetune/model/model.safetensors")
    got = model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert meta["class_names"] == ["5", "6", "7", "8", "9"]
    example = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    served = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion").predict(example)
    with torch.no_grad():
        assert np.allclose(served, model.eval()(torch.from_numpy(example)).numpy(), atol=1e-6)
    assert resolve_model_uri(host, str(tmp_path / "a-folder")) == str(tmp_path / "a-folder")  # not a store URI

    # graft predict and load_predictor read the champion through the store: the strong run's predictions
    held_out = split_inputs(run_store(strong.url, "test"), "test", meta["class_names"])[:4]
    files = [tmp_path / f"held_out_{i}.png" for i in range(len(held_out))]
    for file, image in zip(files, held_out, strict=True):
        file.write_bytes(image.read())
    champion = load_predictor(f"models:/{MODEL}@champion", plugins=[PLUGIN])(files)
    assert np.abs(champion.probabilities - load_predictor(strong.url)(files).probabilities).max() < 1e-6
    out = tmp_path / "champion.csv"
    argv = ["predict", f"models:/{MODEL}@champion", *map(str, files), "--plugin", PLUGIN, "--out", str(out)]
    assert graft_main(argv) == 0
    assert [r["prediction"] for r in csv.DictReader(out.open())] == champion.classes
    assert json.loads(Path(f"{out}.json").read_text())["model"] == f"models:/{MODEL}@champion"


def test_the_tracker_is_off_by_default_and_the_store_is_listed_when_named():
    assert "models" not in PluginHost(env={}).model_stores
    host = PluginHost([PLUGIN], env={})
    assert "models" in host.model_stores
    assert {"kind": "observer", "name": PLUGIN}.items() <= next(
        r for r in host.listing() if r["name"] == PLUGIN
    ).items()
