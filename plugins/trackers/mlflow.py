"""MLflow tracker and model registry: runs, per-epoch metrics, artifacts, model versions, a champion alias.

Off by default (no entry point; `pip install graftflow[mlflow]`). Turn it on per config:

    plugins: [graftflow.plugins.trackers.mlflow]
    tracking:
      uri: http://mlflow.internal:5000      # unset: $MLFLOW_TRACKING_URI, else MLflow's default
      promote: {metric: test.macro_f1}      # move `champion` to a version that beats it

One MLflow run per graftflow run, in the experiment named after the pipeline, found again by its
`graft.run_id` tag, so stage flows in separate processes (a worker, another host) add to the same
run. It records the flattened config as parameters (`finetune.lr`), every epoch's metrics as
`<stage>/<metric>` with the epoch as step (`finetune/val_accuracy`, as TensorBoard's tags), each
stage's seconds, images and summary.json as artifacts, and the metrics of summary.json by their
dotted path (`test.accuracy`, `test.macro_f1`, `finetune.val_accuracy`) when a stage writes them.
The fine-tuned model is logged as an MLflow pyfunc model (graftflow's model folder as its data; no pickle) with an input
example of real held-out images and its signature, and registered as a new version of the model
named after the pipeline. `graft_model_stores` serves `models:/NAME@alias` and `models:/NAME/VERSION`
to `graftflow.core.model_stores.resolve_model_uri` (a local model folder).
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from graftflow.core import ModelStore, hookimpl

__version__ = "1.0"

log = logging.getLogger("graft.mlflow")
RUN_TAG = "graft.run_id"
_runs: dict[tuple[str, str], str] = {}  # (tracking URI, graftflow run id) → MLflow run id, per process


def _tracking(run) -> dict[str, Any]:
    return dict(run.config.get("tracking") or {})


def _client(run):
    import mlflow
    from mlflow import MlflowClient

    uri = _tracking(run).get("uri")
    if uri:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return MlflowClient()


def flatten(data: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten(value, f"{name}.")
        else:
            yield name, value


def _mlflow_run(client, run) -> str:
    """The MLflow run of this graftflow run: found by tag, else created with the config as parameters."""
    import mlflow

    key = (mlflow.get_tracking_uri(), run.run_id)
    if key in _runs:
        return _runs[key]
    name = _tracking(run).get("experiment") or run.name
    experiment = client.get_experiment_by_name(name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(name)
    found = client.search_runs([experiment_id], f"tags.`{RUN_TAG}` = '{run.run_id}'", max_results=1)
    if found:
        _runs[key] = found[0].info.run_id
        return _runs[key]
    created = client.create_run(
        experiment_id,
        run_name=run.run_id,
        tags={RUN_TAG: run.run_id, "graft.pipeline": run.name, "graft.run_url": run.url},
    )
    from mlflow.entities import Param

    params = [Param(k, str(v)) for k, v in flatten(run.config)]  # str() as MLflow writes its own params
    for i in range(0, len(params), 100):  # MLflow's batch limit
        client.log_batch(created.info.run_id, params=[Param(p.key, p.value[:6000]) for p in params[i : i + 100]])
    _runs[key] = created.info.run_id
    return _runs[key]


def _log_metrics(client, mlrun: str, values: Mapping[str, Any], step: int) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(k, float(v), now, step)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    for i in range(0, len(metrics), 1000):
        client.log_batch(mlrun, metrics=metrics[i : i + 1000])


def _summary(run) -> dict[str, Any]:
    import fsspec

    with fsspec.open(f"{run.url}/summary.json", "r", encoding="utf-8") as f:
        return json.load(f)


def _local(url: str, dest: Path) -> Path:
    """A local copy of `url` (run folders may live on s3://)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    target = dest / Path(path).name
    fs.get(path, str(target), recursive=fs.isdir(path))
    return target


def _images_and_notes(stage_url: str) -> list[str]:
    """The stage folder's pictures and markdown (curves, confusion matrix, dataset card), where a person looks."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(stage_url)
    found = [p for pattern in ("*.png", "*.md") for p in fs.glob(f"{path}/{pattern}")]
    return [fs.unstrip_protocol(p) for p in sorted(found)]


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """summary.json's metrics as `test.accuracy`, `test.macro_f1`, ... (per-class tables and matrices left out)."""
    skip = ("per_class", "confusion_matrix")
    return {
        k: v
        for k, v in flatten(summary.get("metrics", {}))
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not any(s in k.split(".") for s in skip)
    }


# --- observer hooks -------------------------------------------------------------------


@hookimpl
def graft_on_stage_start(run, stage):
    _mlflow_run(_client(run), run)


@hookimpl
def graft_on_epoch_end(run, stage, epoch, metrics):
    client = _client(run)
    _log_metrics(client, _mlflow_run(client, run), {f"{stage}/{k}": v for k, v in metrics.items()}, epoch)


@hookimpl
def graft_on_stage_end(run, stage, status, seconds, outputs):
    client = _client(run)
    mlrun = _mlflow_run(client, run)
    client.set_tag(mlrun, f"graft.stage.{stage}", status)
    if status != "completed":
        return
    _log_metrics(client, mlrun, {f"{stage}/seconds": seconds}, 0)
    summary = _summary(run)
    with tempfile.TemporaryDirectory(prefix="graft-mlflow-") as tmp:
        for url in _images_and_notes(f"{run.url}/{stage}"):
            client.log_artifact(mlrun, str(_local(url, Path(tmp))), artifact_path=stage)
        Path(tmp, "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        client.log_artifact(mlrun, str(Path(tmp, "summary.json")))
    if "metrics" in outputs:
        _log_metrics(client, mlrun, summary_metrics(summary), 0)
    tracking = _tracking(run)
    if "model" in outputs and tracking.get("log_model", True):
        log_model(client, run, mlrun, f"{run.url}/{stage}/{outputs['model']}", summary)
    if "metrics" in outputs and tracking.get("promote"):
        promote(client, run, mlrun, summary)


# --- the model and the registry ----------------------------------------------------------


def registered_name(run) -> str:
    return _tracking(run).get("registered_model") or run.name


def log_model(client, run, mlrun: str, model_url: str, summary: Mapping[str, Any]) -> None:
    """The fine-tuned model as an MLflow pyfunc model with an input example and signature, registered."""
    import mlflow
    from mlflow.models import infer_signature

    from graftflow.plugins.trackers.mlflow_pyfunc import GraftPyfunc

    with tempfile.TemporaryDirectory(prefix="graft-mlflow-model-") as tmp:
        folder = _local(model_url, Path(tmp))
        plugins = list(run.config.get("plugins", []))
        model = GraftPyfunc(folder, plugins)
        example = input_example(summary, model.meta)
        signature = infer_signature(example, model.predict(example))
        with mlflow.start_run(run_id=mlrun):
            info = mlflow.pyfunc.log_model(
                name="model",
                loader_module="graftflow.plugins.trackers.mlflow_pyfunc",
                data_path=str(folder),
                model_config={"plugins": plugins},
                input_example=example,
                signature=signature,
                pip_requirements=["graftflow", "mlflow"],  # no environment inference (slow, and not needed)
                registered_model_name=registered_name(run),
            )
    log.info(
        "mlflow: model of run %s registered as %s v%s", run.run_id, registered_name(run), info.registered_model_version
    )


def input_example(summary: Mapping[str, Any], meta: Mapping[str, Any], n: int = 2):
    """A few real held-out images, preprocessed the model's way (size, channels, mean, std): (n, C, H, W) float32."""
    import fsspec
    import numpy as np
    import pyarrow.parquet as pq
    from PIL import Image

    fs, root = fsspec.core.url_to_fs(summary["data"]["path"])
    shard = sorted(p for p in fs.ls(root, detail=False) if p.endswith(".parquet"))[0]
    table = pq.read_table(shard, filesystem=fs, columns=["image", "split"])
    rows = [i for i, split in enumerate(table["split"].to_pylist()) if split == "test"][:n] or list(range(n))
    size, chans = meta["image_size"], meta["in_chans"]
    mean = np.resize(np.asarray(meta["mean"], np.float32), chans)[:, None, None]
    std = np.resize(np.asarray(meta["std"], np.float32), chans)[:, None, None]
    images = []
    for i in rows:
        image = Image.open(io.BytesIO(table["image"][i].as_py())).convert("L" if chans == 1 else "RGB")
        array = np.asarray(image.resize((size, size), Image.BILINEAR), np.float32) / 255.0
        array = array[None] if chans == 1 else array.transpose(2, 0, 1)
        images.append((array - mean) / std)
    return np.stack(images).astype(np.float32)


def promote(client, run, mlrun: str, summary: Mapping[str, Any]) -> None:
    """Move the alias to this run's model version when its metric beats the alias holder's (or none holds it)."""
    cfg = _tracking(run)["promote"]
    metric, mode, alias = cfg["metric"], cfg.get("mode", "max"), cfg.get("alias", "champion")
    value = summary_metrics(summary).get(metric)
    if value is None:
        log.warning("mlflow: tracking.promote.metric '%s' is not in this run's metrics; nothing promoted", metric)
        return
    name = registered_name(run)
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{mlrun}'")
    if not versions:
        log.warning("mlflow: run %s has no version of model '%s' to promote", run.run_id, name)
        return
    version = max(versions, key=lambda v: int(v.version))
    client.set_model_version_tag(name, version.version, metric, str(value))
    try:
        holder = client.get_model_version_by_alias(name, alias)
    except Exception:  # nobody holds the alias yet
        holder = None
    if holder is not None:
        best = client.get_run(holder.run_id).data.metrics.get(metric)
        better = best is None or (value > best if mode == "max" else value < best)
        if not better:
            log.info("mlflow: %s v%s keeps '%s' (%s %s vs %s)", name, holder.version, alias, metric, best, value)
            return
    client.set_registered_model_alias(name, alias, version.version)
    log.info("mlflow: '%s' → %s v%s (%s = %s)", alias, name, version.version, metric, value)


# --- the model store --------------------------------------------------------------------


def fetch(uri: str, dest: Path) -> Path:
    """`models:/NAME@alias` or `models:/NAME/VERSION` from the registry at $MLFLOW_TRACKING_URI → the model folder."""
    import mlflow

    from graftflow.plugins.trackers.mlflow_pyfunc import model_folder

    local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest))
    return model_folder(Path(local))


@hookimpl
def graft_model_stores():
    return [
        ModelStore(
            name="models",
            fetch=fetch,
            description="MLflow model registry: models:/NAME@ALIAS or models:/NAME/VERSION ($MLFLOW_TRACKING_URI)",
        )
    ]
