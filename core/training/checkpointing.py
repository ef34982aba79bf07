"""Resumable training state: written atomically, never loaded half-written.

A checkpoint is a directory `step-<N>/` under `<run>/_checkpoints/<stage>/`:
`tensors.safetensors` (weights, optimizer tensors, EMA, RNG states — nothing
that executes code on load) and `state.json` (positions, schedules, history,
optimizer hyper-parameters), plus `COMPLETE`, written last. It is assembled in
a local temporary directory and moved into place in one step, so a process
killed at any moment leaves either a whole checkpoint or none; loading only
ever considers directories with `COMPLETE`. The checkpoints of a stage are
removed when the stage succeeds, and kept when it fails (the last good one).
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from graftflow.core import storage

COMPLETE = "COMPLETE"


def flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state_dict as safetensors-able tensors plus JSON (no pickling)."""
    tensors, scalars = {}, {}
    for idx, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    return tensors, {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


class Checkpointer:
    def __init__(self, url: str, every_steps: int | None, keep: int = 2):
        self.url, self.every, self.keep = url, every_steps, keep
        self.saved: list[int] = []

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0

    def _steps(self) -> list[int]:
        fs, path = storage.filesystem(self.url)
        if not fs.exists(path):
            return []
        found = []
        for entry in fs.ls(path, detail=False):
            match = re.fullmatch(r"step-(\d+)", entry.rstrip("/").rsplit("/", 1)[-1])
            if match and fs.exists(f"{entry.rstrip('/')}/{COMPLETE}"):
                found.append(int(match.group(1)))
        return sorted(found)

    def save(self, step: int, tensors: dict[str, torch.Tensor], state: dict) -> str:
        final = storage.join(self.url, f"step-{step:08d}")
        local = storage.local_staging_dir(final)  # a hidden sibling when local: the rename below is atomic
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(local / "tensors.safetensors"))
        (local / "state.json").write_text(json.dumps(state, default=float))
        (local / COMPLETE).write_text(str(step))
        storage.publish_dir(local, final)
        self.saved.append(step)
        for old in self._steps()[: -self.keep]:
            fs, path = storage.filesystem(storage.join(self.url, f"step-{old:08d}"))
            fs.rm(path, recursive=True)
        return final

    def latest(self) -> tuple[int, dict[str, torch.Tensor], dict] | None:
        steps = self._steps()
        if not steps:
            return None
        directory = storage.local_copy(storage.join(self.url, f"step-{steps[-1]:08d}"))
        return (
            steps[-1],
            load_file(str(directory / "tensors.safetensors")),
            json.loads((directory / "state.json").read_text()),
        )

    def clear(self) -> None:
        fs, path = storage.filesystem(self.url)
        if fs.exists(path):
            fs.rm(path, recursive=True)
