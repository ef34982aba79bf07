"""Reopen a saved model: a folder with model.safetensors + model.json, or a .safetensors with model.json beside it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from graftflow.core import storage
from graftflow.core.errors import ConfigError
from graftflow.core.models.build import build_model, head_keys
from graftflow.core.models.weights import META, WEIGHTS, load_into, read_weights
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import LayerGroup


def read_model(host: PluginHost, url: str, field: str) -> tuple[nn.Module, dict[str, Any]]:
    """The model saved at `url` and its description; `field` names the config that pointed here, for errors."""
    base = url.rstrip("/")
    if base.endswith(".safetensors"):
        weights, meta_url = base, storage.join(base.rsplit("/", 1)[0] if "/" in base else ".", META)
    else:
        weights, meta_url = storage.join(base, WEIGHTS), storage.join(base, META)
    if not storage.exists(meta_url):
        raise ConfigError(
            f"{field}: '{url}' is not a saved model: {meta_url} is missing "
            f"(give a run's finetune/model folder, or a .safetensors with model.json beside it)"
        )
    meta = storage.read_json(meta_url)
    model = build_model(host, meta)
    load_into(model, read_weights(weights, field), drop=set(), source=field)
    return model, meta


def open_model(url: str, plugins: Sequence[str] = ()) -> tuple[nn.Module, dict[str, Any]]:
    """A saved model outside a run (a notebook, an MLflow pyfunc), with the plugins that build its family."""
    return read_model(PluginHost(plugins), url, "model")


def load_weights_file(
    url: str | None, model: nn.Module, groups: Sequence[LayerGroup], rename: Callable[[str], str | None] | None = None
) -> dict | None:
    """`model.weights` (a local or fsspec file) into `model`, its head left as built; None when unset.

    `rename`: the task's `backbone_key`, for a classifier's weights file under a task's model (a
    segmentation encoder); keys the model already has keep their names.
    """
    if not url:
        return None
    state = read_weights(url, "model.weights")
    if rename is not None:
        own = model.state_dict()
        renamed = {k: k if k in own else rename(k) for k in state}
        state = {new: state[k] for k, new in renamed.items() if new is not None}
    return load_into(model, state, drop=head_keys(model, groups), source=url)
