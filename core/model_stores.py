"""Model URIs: a local folder or fsspec URL as it is, or a registry URI fetched through a model-store plugin.

`models:/NAME@champion` (MLflow's registry) and any other scheme a `graft_model_stores`
plugin claims resolve to a local folder with model.safetensors + model.json; every other
location (a path, s3://, a run's `finetune/model`) is returned unchanged for the reader.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from graftflow.core.errors import GraftError, PluginError
from graftflow.core.plugin_manager import PluginHost

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def resolve_model_uri(host: PluginHost, uri: str, dest: Path | None = None) -> str:
    """Where to read the model at `uri` from: fetched under `dest` (default a temporary folder) by its store."""
    match = _SCHEME.match(uri)
    if match is None or match.group(1) not in host.model_stores:
        return uri
    store = host.model_stores.get(match.group(1))
    dest = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="graft-model-"))
    dest.mkdir(parents=True, exist_ok=True)
    try:
        folder = Path(store.fetch(uri, dest))
    except GraftError:
        raise
    except Exception as exc:
        raise GraftError(f"model '{uri}': the '{store.name}' model store could not fetch it: {exc}") from exc
    if not (folder / "model.json").is_file():
        raise PluginError(f"model '{uri}': the '{store.name}' model store returned {folder}, which has no model.json")
    return str(folder)
