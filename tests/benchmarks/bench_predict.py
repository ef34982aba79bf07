"""Prediction throughput: graftflow's Predictor vs a plain PyTorch loop, and the ONNX engine vs eager (issue 14).

The model is the demo's (resnet `tiny`, 1×16×16 inputs, 5 classes) saved as a run's model
folder and exported to ONNX by the exporter plugin, loaded back through `load_predictor`, the
code path `graft predict` uses. The images are the UCI digits as decoded uint8 tensors at the
model's size, the same tensors for every contender:

- `predict_images_per_s`: `predictor(images)` (model preprocessing, batching, softmax, the
  Predictions record) against the loop a person writes by hand — stack, normalise, forward,
  softmax — over the same model and batches (target ≥ 0.9×);
- `predict_onnx_vs_eager_images_per_s`: the same predictor on the ONNX export (onnxruntime)
  against the eager one (reported, no target: it depends on the runtime and the machine);
- `predict_files_images_per_s`: the predictor reading the images as PNG files (decode, resize)
  against a plain loop that decodes the same files with torchvision (target ≥ 0.9×).

Repeats alternate the order of the contenders (ABBA); medians are compared.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from graftflow.core.inference.predictor import load_predictor
from graftflow.core.inference.sources import open_inputs
from graftflow.core.models.weights import save_model
from graftflow.core.plugin_manager import PluginHost
from graftflow.plugins.exporters import onnx_export
from tests.benchmarks.results import Result

SIZE, CLASSES, BATCH = 16, 5, 64
META = {
    "family": "resnet",
    "variant": "tiny",
    "params": {},
    "num_classes": CLASSES,
    "class_names": [str(c) for c in range(5, 10)],
    "in_chans": 1,
    "image_size": SIZE,
    "mean": [0.5],
    "std": [0.5],
    "eval_transforms": [],
    "plugins": [],
}


def _export_folder(root: Path) -> Path:
    """What a run's export stage leaves: model.json, exports.json, onnx/ and safetensors/."""
    torch.manual_seed(0)
    model = PluginHost().families.get("resnet").build("tiny", num_classes=CLASSES, in_chans=1, image_size=SIZE).eval()
    folder = root / "export"
    save_model(model, folder / "safetensors", META)
    onnx_files = onnx_export(model, torch.zeros(2, 1, SIZE, SIZE), folder / "onnx")
    (folder / "model.json").write_text(json.dumps(META))
    exports = [
        {"format": "onnx", "files": [str(p.relative_to(folder)) for p in onnx_files]},
        {"format": "safetensors", "files": ["safetensors/model.safetensors"]},
    ]
    (folder / "exports.json").write_text(json.dumps(exports))
    return folder


def _images(n: int, root: Path) -> tuple[list[torch.Tensor], Path]:
    """n digits as uint8 (1, 16, 16) tensors, and the same images as PNG files."""
    from PIL import Image

    digits = load_digits().images
    pixels = (np.resize(digits, (n, 8, 8)) * 255 / 16).astype(np.uint8)
    images = [
        v2.functional.resize(torch.from_numpy(p)[None], [SIZE, SIZE], antialias=True) for p in pixels
    ]  # decoded, at the model's size
    folder = root / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{i:05d}.png")
    return images, folder


def _plain_loop(model: torch.nn.Module) -> Callable[[list[torch.Tensor]], float]:
    normalize = v2.Normalize([0.5], [0.5])

    @torch.no_grad()
    def run(images: list[torch.Tensor]) -> float:
        start = time.perf_counter()
        for i in range(0, len(images), BATCH):
            x = normalize(torch.stack(images[i : i + BATCH]).float() / 255)
            model(x).softmax(1).argmax(1)
        return len(images) / (time.perf_counter() - start)

    return run


def _plain_files(model: torch.nn.Module, files: list[Path]) -> Callable[[], float]:
    normalize = v2.Normalize([0.5], [0.5])

    @torch.no_grad()
    def run() -> float:
        start = time.perf_counter()
        for i in range(0, len(files), BATCH):
            batch = []
            for f in files[i : i + BATCH]:
                image = decode_image(torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8), ImageReadMode.GRAY)
                batch.append(v2.functional.resize(image, [SIZE, SIZE], antialias=True))
            model(normalize(torch.stack(batch).float() / 255)).softmax(1).argmax(1)
        return len(files) / (time.perf_counter() - start)

    return run


def _timed(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def _alternate(a: Callable[[], float], b: Callable[[], float], repeats: int) -> tuple[list[float], list[float]]:
    first, second = [], []
    for repeat in range(repeats):  # ABBA: neither contender always runs first
        if repeat % 2 == 0:
            first.append(a())
            second.append(b())
        else:
            second.append(b())
            first.append(a())
    return first, second


def run(quick: bool = False) -> list[Result]:
    n, repeats = (1024, 3) if quick else (4096, 7)
    with tempfile.TemporaryDirectory(prefix="graft-bench-predict-") as tmp:
        root = Path(tmp)
        folder = _export_folder(root)
        images, png_folder = _images(n, root)
        eager = load_predictor(str(folder), device="cpu", batch_size=BATCH)
        onnx = load_predictor(str(folder), engine="onnx", device="cpu", batch_size=BATCH)
        plain = _plain_loop(eager.engine.model)
        eager(images[:BATCH]), plain(images[:BATCH]), onnx(images[:BATCH])  # warm-up
        ours, bare = _alternate(lambda: _timed(lambda: eager(images), n), lambda: plain(images), repeats)
        onnx_rates, eager_rates = _alternate(
            lambda: _timed(lambda: onnx(images), n), lambda: _timed(lambda: eager(images), n), repeats
        )
        files = sorted(png_folder.glob("*.png"))
        with open_inputs([str(png_folder)]) as inputs:
            file_ours, file_bare = _alternate(
                lambda: _timed(lambda: eager.predict_inputs(inputs), n),
                _plain_files(eager.engine.model, files),
                repeats,
            )
    threads = torch.get_num_threads()
    setup = f"resnet tiny 1×{SIZE}×{SIZE}, {CLASSES} classes, batch {BATCH}, {n} images × {repeats} alternating repeats"
    return [
        Result(
            name="predict_images_per_s",
            value=statistics.median(ours),
            baseline=statistics.median(bare),
            unit="images/s",
            target_ratio=0.9,
            notes=f"Predictor(uint8 tensors) vs a plain PyTorch loop; {setup}, cpu, {threads} threads",
            extra={"ours": ours, "plain": bare},
        ),
        Result(
            name="predict_onnx_vs_eager_images_per_s",
            value=statistics.median(onnx_rates),
            baseline=statistics.median(eager_rates),
            unit="images/s",
            notes=f"the ONNX engine (onnxruntime, CPU) vs the eager engine, same Predictor; {setup}",
            extra={"onnx": onnx_rates, "eager": eager_rates},
        ),
        Result(
            name="predict_files_images_per_s",
            value=statistics.median(file_ours),
            baseline=statistics.median(file_bare),
            unit="images/s",
            target_ratio=0.9,
            notes=f"Predictor from PNG files vs a plain loop decoding the same files (torchvision); {setup}",
            extra={"ours": file_ours, "plain": file_bare},
        ),
    ]
