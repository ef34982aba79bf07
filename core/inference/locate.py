"""Which trained model a name means: the one function that turns `MODEL` into files.

`MODEL` may be a run id (looked up under the artifact root), `latest` (the newest run of
a pipeline with a fine-tuned model), a run folder, a model folder (a run's
`finetune/model`: model.safetensors + model.json), an export folder (a run's `export/`),
or a `.safetensors` file with model.json beside it; any of them at an fsspec URL.
A URI of a model store (`models:/NAME@alias`, MLflow's registry, or any scheme a
`graft_model_stores` plugin serves) is fetched by that plugin to a local model folder
(`graftflow.core.model_stores.resolve_model_uri`) and read as one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from graftflow.core import storage
from graftflow.core.errors import ConfigError
from graftflow.core.model_stores import resolve_model_uri, store_scheme, unserved_store_message
from graftflow.core.models.weights import META, WEIGHTS
from graftflow.core.plugin_manager import PluginHost

SUMMARY = "summary.json"
EXPORTS = "exports.json"


@dataclass(frozen=True)
class ModelLocation:
    """Where a trained model's pieces are. `weights` is None for an export folder without safetensors."""

    ref: str  # as the user wrote it
    meta: dict[str, Any]  # model.json: family, variant, classes, preprocessing
    weights: str | None  # model.safetensors for the eager engine
    exports: dict[str, str]  # format → URL of its main file (onnx, torchscript, safetensors)
    run_url: str | None  # the run it came from, when known (for --split)

    def describe(self) -> str:
        return self.run_url or self.ref


def resolve_model(
    ref: str,
    artifact_root: str = "./.graft/runs",
    *,
    pipeline: str | None = None,
    field: str = "MODEL",
    host: PluginHost | None = None,
    fetch_to: Path | None = None,
) -> ModelLocation:
    """`ref` → a ModelLocation, or one ConfigError line naming `field` and what was tried.

    A model-store URI is fetched under `fetch_to` (default: a temporary folder) by the
    store of `host` (default: the installed plugins and $GRAFT_PLUGINS); the location
    keeps the URI as its `ref`.
    """
    local = from_model_store(ref, host, field, fetch_to)
    location = _locate(local, artifact_root, pipeline, field)
    return location if local == ref else replace(location, ref=ref)


def from_model_store(ref: str, host: PluginHost | None, field: str, fetch_to: Path | None = None) -> str:
    """A local model folder for a model-store URI; any other `ref` unchanged."""
    if store_scheme(ref) is None or storage.exists(ref):
        return ref
    host = host if host is not None else PluginHost()
    problem = unserved_store_message(host, ref, field)
    if problem:
        raise ConfigError(problem)
    return resolve_model_uri(host, ref, fetch_to)


def _locate(ref: str, artifact_root: str, pipeline: str | None, field: str) -> ModelLocation:
    base = ref.rstrip("/")
    if base.endswith(".safetensors") and storage.exists(base):
        return _weights_file(ref, base, field)
    if "/" in base or "://" in base or storage.exists(base):
        if not storage.exists(base):
            raise ConfigError(f"{field}: '{ref}' does not exist")
        return _folder(ref, base, field)
    return _run_folder(ref, _find_run(ref, artifact_root, pipeline, field), field)


def _weights_file(ref: str, path: str, field: str) -> ModelLocation:
    meta_url = storage.join(path.rsplit("/", 1)[0], META) if "/" in path else META
    if not storage.exists(meta_url):
        raise ConfigError(f"{field}: '{ref}' has no {META} beside it (it describes the architecture and classes)")
    return ModelLocation(ref, storage.read_json(meta_url), path, {}, None)


def _folder(ref: str, base: str, field: str) -> ModelLocation:
    if storage.exists(storage.join(base, SUMMARY)):
        return _run_folder(ref, base, field)
    if storage.exists(storage.join(base, EXPORTS)):
        return _export_folder(ref, base, None, field)
    if storage.exists(storage.join(base, META)) and storage.exists(storage.join(base, WEIGHTS)):
        run = _run_above(base, levels=2)  # <run>/finetune/model
        exports = _export_folder(ref, storage.join(run, "export"), run, field).exports if _has_export(run) else {}
        return ModelLocation(
            ref, storage.read_json(storage.join(base, META)), storage.join(base, WEIGHTS), exports, run
        )
    raise ConfigError(
        f"{field}: '{ref}' is not a run folder ({SUMMARY}), a model folder ({META} + {WEIGHTS}) "
        f"or an export folder ({EXPORTS})"
    )


def _run_above(path: str, levels: int) -> str | None:
    parts = path.rstrip("/").rsplit("/", levels)
    if len(parts) <= levels:
        return None
    run = parts[0]
    return run if storage.exists(storage.join(run, SUMMARY)) else None


def _has_export(run: str | None) -> bool:
    return run is not None and _completed(run, "export")


def _completed(run: str, stage: str) -> bool:
    entry = storage.read_json(storage.join(run, SUMMARY)).get("stages", {}).get(stage, {})
    return entry.get("status") == "completed"


def _export_folder(ref: str, base: str, run: str | None, field: str) -> ModelLocation:
    exports = storage.read_json(storage.join(base, EXPORTS))
    files = {e["format"]: storage.join(base, e["files"][0]) for e in exports}
    meta_url = storage.join(base, META)
    if not storage.exists(meta_url):
        raise ConfigError(f"{field}: export folder '{ref}' has no {META}")
    weights = files.get("safetensors")
    if weights is None and run is not None and _completed(run, "finetune"):
        weights = storage.join(run, "finetune", "model", WEIGHTS)
    return ModelLocation(ref, storage.read_json(meta_url), weights, files, run or _run_above(base, levels=1))


def _run_folder(ref: str, run: str, field: str) -> ModelLocation:
    if not _completed(run, "finetune"):
        raise ConfigError(f"{field}: run '{ref}' has no completed finetune stage (no trained model to predict with)")
    model_dir = storage.join(run, "finetune", "model")
    exports = _export_folder(ref, storage.join(run, "export"), run, field).exports if _has_export(run) else {}
    return ModelLocation(
        ref, storage.read_json(storage.join(model_dir, META)), storage.join(model_dir, WEIGHTS), exports, run
    )


def _find_run(ref: str, artifact_root: str, pipeline: str | None, field: str) -> str:
    """A run id under `<artifact_root>/<pipeline>/`, any pipeline when None; `latest`: the newest trained one."""
    fs, root = storage.filesystem(artifact_root)
    pattern = f"{root.rstrip('/')}/{pipeline or '*'}/{'*' if ref == 'latest' else ref}/{SUMMARY}"
    found = sorted(p.rsplit("/", 1)[0] for p in fs.glob(pattern) if "/_" not in p)
    if ref == "latest":
        found = [p for p in found if _completed(_url(artifact_root, root, p), "finetune")]
        if not found:
            raise ConfigError(f"{field}: no run under {artifact_root} has a fine-tuned model yet (latest)")
        found = [max(found, key=lambda p: p.rsplit("/", 1)[1])]  # run ids start with their time
    if not found:
        raise ConfigError(
            f"{field}: '{ref}' is not a run id under {artifact_root}, a run folder, a model folder or an export folder"
        )
    if len(found) > 1:
        names = ", ".join(p.rsplit("/", 2)[1] for p in found)
        raise ConfigError(f"{field}: run id '{ref}' is in several pipelines ({names}); give the run folder")
    return _url(artifact_root, root, found[0])


def _url(artifact_root: str, root: str, path: str) -> str:
    """`path` as found by the filesystem, in the form of `artifact_root` (keeps a URL's protocol)."""
    return artifact_root.rstrip("/") + path[len(root.rstrip("/")) :] if path.startswith(root.rstrip("/")) else path
