"""Weights in and out, safely.

Weights are written as safetensors (nothing executes on load) with a small
JSON beside them saying how to rebuild the architecture. Reading accepts
safetensors, or a plain state_dict through `torch.load(weights_only=True)`;
anything pickled beyond tensors is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from graftflow.core import storage
from graftflow.core.errors import GraftError, StageError

WEIGHTS = "model.safetensors"
META = "model.json"


def save_model(model: nn.Module, directory: Path, meta: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(_unshare(state), str(directory / WEIGHTS))
    storage.write_json(str(directory / META), meta)
    return directory / WEIGHTS


def _unshare(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory; give each its own copy."""
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else id(v)
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def read_weights(url: str, field: str = "model.weights") -> dict[str, torch.Tensor]:
    path = storage.local_copy(url)
    if not path.is_file():
        raise GraftError(f"{field}: weights file '{url}' does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise GraftError(
                f"{field}: '{url}' is not a plain state_dict (refusing to unpickle code): {type(exc).__name__}"
            ) from None
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise GraftError(f"{field}: '{url}' does not hold a state_dict of tensors")
        return obj
    raise GraftError(f"{field}: unsupported weights format '{path.suffix}'; use .safetensors (or a .pt state_dict)")


def load_into(model: nn.Module, state: dict[str, torch.Tensor], drop: set[str], source: str) -> dict[str, Any]:
    """Load matching keys; report what was loaded, missing and unexpected. Shape mismatches are errors."""
    dropped = sorted(k for k in state if k in drop)
    state = {k: v for k, v in state.items() if k not in drop}
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if mismatched:
        k = mismatched[0]
        raise StageError(
            f"{source}: shape mismatch for '{k}': checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            f" ({len(mismatched)} mismatched key(s)); is it the same family and variant?"
        )
    result = model.load_state_dict(state, strict=False)
    loaded = [k for k in state if k in own]
    if not loaded:
        raise StageError(f"{source}: no key of the checkpoint matches the model; is it the same family?")
    return {
        "source": source,
        "loaded": len(loaded),
        "missing": sorted(result.missing_keys),
        "unexpected": sorted(result.unexpected_keys),
        "dropped_head": dropped,
    }


def extend_head(model: nn.Module, old_head: dict[str, torch.Tensor], rows: int) -> int:
    """Copy a smaller head's tensors into the first `rows` class rows of `model`'s head (class-incremental learning).

    Head tensors are indexed by class on their first dimension (a linear classifier's
    weight and bias), so the pretrained classes keep their outputs and the classes
    appended after them start as the model built them. Returns the rows copied.
    """
    own = model.state_dict()
    for key, value in old_head.items():
        if key not in own or own[key].shape[1:] != value.shape[1:] or value.shape[0] != rows:
            raise StageError(
                f"finetune.head: extend: the pretrained head's '{key}' {tuple(value.shape)} does not fit "
                f"the extended head {tuple(own[key].shape) if key in own else '(missing)'}"
            )
        with torch.no_grad():
            own[key][:rows].copy_(value)
    return rows
