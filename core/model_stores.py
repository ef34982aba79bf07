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
_STORE_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):(?!//)")  # models:/NAME@alias; not s3:// nor a drive letter


def store_scheme(uri: str) -> str | None:
    """The scheme of what looks like a model-store URI (`models` of `models:/NAME@alias`), else None.

    Paths, run ids and fsspec URLs (`s3://...`) have none; `graft predict` and the
    predict stage then tell a scheme that no loaded store serves from a missing file.
    """
    match = _STORE_URI.match(uri)
    return match.group(1) if match else None


def unserved_store_message(host: PluginHost, uri: str, field: str) -> str | None:
    """One line when `uri` names a model store that no plugin of `host` serves; None when one does (or no store)."""
    scheme = store_scheme(uri)
    if scheme is None or scheme in host.model_stores:
        return None
    served = ", ".join(f"{name}:" for name in host.model_stores.names()) or "none loaded"
    return (
        f"{field}: '{uri}': no model store serves '{scheme}:' (model stores: {served}); load the plugin "
        f"that serves it (plugins: in the config, --plugin, or $GRAFT_PLUGINS)"
    )


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
