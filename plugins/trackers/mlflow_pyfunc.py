"""The MLflow pyfunc face of a graftflow model: `mlflow.pyfunc.load_model("models:/NAME@champion")` works.

The logged MLflow model holds the run's `finetune/model` folder (model.safetensors + model.json) as
its data; this loader module rebuilds the network from it with graftflow's own reader, so nothing is
unpickled. `predict` takes float32 images shaped (N, C, H, W), already normalised the model's way
(model.json: image_size, in_chans, mean, std), and returns the logits (N, classes).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class GraftPyfunc:
    def __init__(self, folder: Path, plugins: list[str]):
        from graftflow.core import open_model

        self.model, self.meta = open_model(str(folder), plugins)
        self.model.eval()

    def predict(self, model_input, params=None):
        import torch

        batch = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.model(batch).numpy()


def model_folder(root: Path) -> Path:
    """The folder under `root` that holds model.json (pyfunc keeps its data under `data/<name>/`)."""
    found = sorted(Path(root).rglob("model.json"), key=lambda p: len(p.parts))
    if not found:
        raise FileNotFoundError(f"no model.json under {root}")
    return found[0].parent


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> GraftPyfunc:
    """MLflow's entry point; `model_config` carries the run's `plugins:` (a family may come from one)."""
    return GraftPyfunc(model_folder(Path(data_path)), list((model_config or {}).get("plugins", [])))
