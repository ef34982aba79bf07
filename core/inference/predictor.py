"""A trained model as a function from images to classes: the one code path of `graft predict`, the
predict flow and notebooks.

    predictor = load_predictor("20261122-091638-1559")   # a run id, run folder, model or export folder
    predictions = predictor(["cat.png", "dog.jpg"])      # paths, bytes, PIL images, arrays, uint8 tensors
    predictions.classes, predictions.probabilities

Preprocessing is the model's own, read from its model.json: images are decoded and
resized exactly as the data store's images were for evaluation (torchvision's
decoder in the model's channel mode, then an antialiased resize), the run's
`augment.eval` transforms run on them, and the batch is normalised with the model's
mean and std. So a PNG of a held-out image gets evaluate's prediction for it.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.io import ImageReadMode
from torchvision.transforms import v2

from graftflow.core import storage
from graftflow.core.config import DEFAULT_TTA_VIEWS, PluginRef
from graftflow.core.data.augmentation import sample_transforms
from graftflow.core.data.dataset import base_transform, decode_resized, normalizer
from graftflow.core.device import DevicePolicy, Hardware, resolve_policy
from graftflow.core.errors import ConfigError, DataError
from graftflow.core.inference.engines import ENGINES, EagerEngine, OnnxEngine, TorchScriptEngine
from graftflow.core.inference.locate import ModelLocation, resolve_model
from graftflow.core.inference.sources import ImageInput, open_inputs
from graftflow.core.inference.tta import tta_probabilities
from graftflow.core.models.build import build_model
from graftflow.core.models.weights import load_into, read_weights
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.tasks import task_for_model, task_ref_of
from graftflow.core.validation import plugin_params

FIRST_SKIPPED = 5  # skipped images named in messages


@dataclass
class Predictions:
    """Per image: its name, the probability of every class, its true label when known; and what was skipped."""

    names: list[str]
    class_names: list[str]
    probabilities: np.ndarray  # (N, classes), float32, rows sum to 1
    labels: list[str | None] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why)
    tta_views: list[str] | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def indices(self) -> np.ndarray:
        return self.probabilities.argmax(1) if len(self) else np.zeros(0, dtype=np.int64)

    @property
    def classes(self) -> list[str]:
        """The predicted class of each image."""
        return [self.class_names[i] for i in self.indices]

    @property
    def confidence(self) -> np.ndarray:
        """The predicted class's probability for each image."""
        return self.probabilities.max(1) if len(self) else np.zeros(0, dtype=np.float32)

    def top_k(self, k: int) -> list[list[tuple[str, float]]]:
        k = min(k, len(self.class_names))
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [
            [(self.class_names[j], float(p[j])) for j in row] for row, p in zip(order, self.probabilities, strict=True)
        ]

    def rows(self, top_k: int = 1) -> list[dict[str, Any]]:
        """One row per image: source, prediction, probability, then class_i / probability_i for i = 2..k."""
        rows = []
        for i, top in enumerate(self.top_k(top_k)):
            row: dict[str, Any] = {"source": self.names[i], "prediction": top[0][0], "probability": top[0][1]}
            for rank, (name, p) in enumerate(top[1:], start=2):
                row[f"class_{rank}"], row[f"probability_{rank}"] = name, p
            if self.labels and self.labels[i] is not None:
                row["label"] = self.labels[i]
            rows.append(row)
        return rows

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.indices, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, counts, strict=True)}

    def skipped_summary(self) -> str:
        first = "; ".join(f"{name}: {why}" for name, why in self.skipped[:FIRST_SKIPPED])
        more = f" (and {len(self.skipped) - FIRST_SKIPPED} more)" if len(self.skipped) > FIRST_SKIPPED else ""
        return f"{len(self.skipped)} image(s) skipped: {first}{more}" if self.skipped else ""


class Predictor:
    """A model with exactly its preprocessing. `predictor(images)` → `Predictions`."""

    def __init__(
        self,
        engine: Callable[[torch.Tensor], torch.Tensor],
        meta: dict[str, Any],
        transforms: Sequence[Callable] = (),
        *,
        tta_views: Sequence[str] | None = None,
        batch_size: int = 64,
        location: ModelLocation | None = None,
        task: Any = None,
        task_params: dict[str, Any] | None = None,
    ):
        self.engine, self.meta, self.location = engine, meta, location
        self.task, self.task_params = task, dict(task_params or {})  # the TaskSpec the model was trained for
        self.class_names: list[str] = list(meta["class_names"])
        self.channels, self.image_size = int(meta["in_chans"]), int(meta["image_size"])
        self.transforms = v2.Compose(list(transforms)) if transforms else None
        self.normalize = normalizer(meta["mean"], meta["std"], self.channels)
        self.resize = base_transform(self.image_size)
        self.mode = ImageReadMode.GRAY if self.channels == 1 else ImageReadMode.RGB
        self.tta_views = list(tta_views) if tta_views else None
        self.batch_size = batch_size

    @property
    def engine_name(self) -> str:
        return getattr(self.engine, "name", type(self.engine).__name__)

    def describe(self) -> dict[str, Any]:
        """What made these predictions, for the record written beside them."""
        return {
            "model": self.location.describe() if self.location else None,
            "engine": self.engine_name,
            "family": self.meta.get("family"),
            "variant": self.meta.get("variant"),
            "classes": self.class_names,
            "image_size": self.image_size,
            "channels": self.channels,
            "mean": self.meta["mean"],
            "std": self.meta["std"],
            "eval_transforms": self.meta.get("eval_transforms", []),
            "tta": self.tta_views is not None,
            "tta_views": self.tta_views,
        }

    # -- preprocessing ---------------------------------------------------------------------
    def _decoded(self, encoded: Sequence[bytes]) -> list[torch.Tensor | Exception]:
        """uint8 (C, S, S) per image, decoded and resized as the data store's images are; the error when not."""
        out: list[torch.Tensor | Exception] = []
        for data in encoded:
            try:
                out.append(decode_resized(data, self.mode, self.resize))
            except (RuntimeError, ValueError) as exc:
                out.append(exc)
        return out

    def _from_pixels(self, image: Any) -> torch.Tensor:
        """A uint8 tensor (C,H,W) or array (H,W[,C]) to the model's channels and size."""
        tensor = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image
        if tensor.ndim == 2:
            tensor = tensor[None]
        elif tensor.ndim == 3 and tensor.shape[0] not in (1, 3) and tensor.shape[-1] in (1, 3, 4):
            tensor = tensor.permute(2, 0, 1)  # HWC → CHW
        if tensor.dtype != torch.uint8:
            raise DataError(f"images given as arrays must be uint8 (0–255), got {tensor.dtype}")
        tensor = tensor[:3]
        if tensor.shape[0] != self.channels:
            tensor = v2.functional.rgb_to_grayscale(tensor) if self.channels == 1 else tensor.expand(3, -1, -1)
        if tuple(tensor.shape[-2:]) != (self.image_size, self.image_size):
            tensor = self.resize(tensor)
        return tensor

    def batch(self, pixels: Sequence[torch.Tensor]) -> torch.Tensor:
        """Eval transforms per image, then the model's normalisation over the stacked batch."""
        if self.transforms is not None:
            pixels = [self.transforms(p) for p in pixels]
        return self.normalize(torch.stack(list(pixels)))

    # -- predicting ------------------------------------------------------------------------
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (CPU float32) of a normalised batch; averaged over the TTA views when set."""
        if self.tta_views:
            return tta_probabilities(self.engine, images, self.tta_views).cpu()
        return self.engine(images).float().softmax(1).cpu()

    def __call__(self, images: Any, progress: Callable[[int, int], None] | None = None) -> Predictions:
        """Images (one, or a sequence): paths, folders, globs or URLs (as `graft predict` reads them),
        encoded bytes, PIL images, uint8 arrays or tensors."""
        single = isinstance(images, (str, Path, bytes, np.ndarray, torch.Tensor)) or hasattr(images, "convert")
        items = [images] if single else list(images)
        if items and all(isinstance(x, (str, Path)) for x in items):
            with open_inputs([str(x) for x in items], "images") as inputs:
                return self.predict_inputs(inputs, progress)
        if items and all(isinstance(x, bytes) or hasattr(x, "convert") for x in items):
            return self.predict_inputs([_as_input(x, i) for i, x in enumerate(items)], progress)
        names = [f"image[{i}]" for i in range(len(items))]
        probs = [
            self.probabilities(self.batch([self._from_pixels(x) for x in chunk]))
            for chunk in _chunks(items, self.batch_size)
        ]
        return self._predictions(names, probs, [], [])

    def predict_inputs(
        self, inputs: Iterable[ImageInput], progress: Callable[[int, int], None] | None = None
    ) -> Predictions:
        """Every input that can be read and decoded; the others are skipped with the reason, never fatal."""
        inputs = list(inputs)
        names, labels, probs, skipped = [], [], [], []
        done = 0
        for chunk in _chunks(inputs, self.batch_size):
            encoded, readable = [], []
            for item in chunk:
                try:
                    encoded.append(item.read())
                    readable.append(item)
                except (OSError, DataError) as exc:
                    skipped.append((item.name, f"cannot be read ({_first_line(exc)})"))
            pixels = []
            for item, image in zip(readable, self._decoded(encoded), strict=True):
                if isinstance(image, Exception):
                    skipped.append((item.name, f"cannot be decoded as an image ({_decode_reason(image)})"))
                    continue
                pixels.append(image)
                names.append(item.name)
                labels.append(item.label)
            if pixels:
                probs.append(self.probabilities(self.batch(pixels)))
            done += len(chunk)
            if progress is not None:
                progress(done, len(inputs))
        return self._predictions(names, probs, labels, skipped)

    def _predictions(self, names, probs, labels, skipped) -> Predictions:
        matrix = torch.cat(probs).numpy() if probs else np.zeros((0, len(self.class_names)), dtype=np.float32)
        return Predictions(
            names,
            self.class_names,
            matrix,
            labels if any(x is not None for x in labels) else [],
            skipped,
            self.tta_views,
        )


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _decode_reason(exc: BaseException) -> str:
    """torchvision's decoder error without its C++ source location: "Unsupported image file. ..."."""
    text = _first_line(exc.__cause__ or exc)
    parts = [p for p in text.split(", ") if ".cpp:" not in p and p.strip() != "decode_image"]
    return (", ".join(parts) or text).split(". ")[0]


def _as_input(item: Any, i: int) -> ImageInput:
    if isinstance(item, bytes):
        return ImageInput(f"image[{i}]", lambda: item)
    buffer = io.BytesIO()  # a PIL image: encoded losslessly, then decoded as any file is
    item.save(buffer, format="PNG")
    data = buffer.getvalue()
    return ImageInput(f"image[{i}]", lambda: data)


# --- loading ------------------------------------------------------------------------------------


def load_predictor(
    model: Any,
    *,
    engine: str = "eager",
    device: str = "auto",
    tta: bool = False,
    tta_views: Sequence[str] = DEFAULT_TTA_VIEWS,
    batch_size: int = 64,
    artifact_root: str = "./.graft/runs",
    pipeline: str | None = None,
    field: str = "MODEL",
    plugins: Sequence[str] = (),
    host: PluginHost | None = None,
) -> Predictor:
    """The predictor for `model`: a run id, a run folder (or a `Run`), a model folder, an export folder,
    or a model-store URI (`models:/NAME@champion`) served by one of `plugins` (or `host`'s stores)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine: expected one of {', '.join(ENGINES)}, got '{engine}'")
    ref = str(getattr(model, "url", model))
    stores = host if host is not None else PluginHost(list(plugins)) if plugins else None
    with tempfile.TemporaryDirectory(prefix="graft-model-") as fetched:  # a store's copy: read, then removed
        location = resolve_model(ref, artifact_root, pipeline=pipeline, field=field, host=stores, fetch_to=fetched)
        meta = location.meta
        model_host = PluginHost([*meta.get("plugins", []), *plugins])
        refs = [PluginRef.model_validate(r) for r in meta.get("eval_transforms", [])]
        transforms, _ = sample_transforms(model_host, refs, "augment.eval")
        policy = _policy(model_host, meta, device)
        runner = _engine(engine, location, model_host, policy, field)
        task = task_for_model(model_host, meta)
        task_params = plugin_params(task, task_ref_of(meta).params, "model.json task")
    return Predictor(
        runner,
        meta,
        transforms,
        tta_views=list(tta_views) if tta else None,
        batch_size=batch_size,
        location=location,
        task=task,
        task_params=task_params,
    )


def _policy(host: PluginHost, meta: dict[str, Any], device: str) -> DevicePolicy:
    family = host.families.get(meta["family"], "model.family")
    conv = "channels_last" in family.variant_capabilities(meta["variant"])
    return resolve_policy(device, "auto", Hardware.probe(), conv_net=conv)


def _engine(name: str, location: ModelLocation, host: PluginHost, policy: DevicePolicy, field: str):
    if name == "eager":
        if location.weights is None:
            raise ConfigError(f"{field}: '{location.ref}' has no safetensors weights for the eager engine")
        model = build_model(host, location.meta)
        load_into(model, read_weights(location.weights, field), drop=set(), source=field)
        return EagerEngine(model, policy)
    fmt = "onnx" if name == "onnx" else "torchscript"
    if fmt not in location.exports:
        engine_field = "--engine" if field == "MODEL" else field.rsplit(".", 1)[0] + ".engine"
        raise ConfigError(
            f"{engine_field} {name}: '{location.ref}' has no {fmt} export; run the export stage with "
            f"export.formats including {fmt} (--stages export --run-id RUN)"
        )
    url = location.exports[fmt]
    local = storage.local_copy(url.rsplit("/", 1)[0]) / url.rsplit("/", 1)[1]  # ONNX keeps its data file beside it
    return OnnxEngine(local, policy) if fmt == "onnx" else TorchScriptEngine(local, policy)
