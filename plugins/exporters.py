"""Exporters: TorchScript, ONNX and safetensors, each with a check that runs the artifact.

Every `export` works on the model in eval mode (and puts back the mode it found);
every `verify` runs the written files on the example and returns logits on the
example's device, which the core compares with the eager model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from graftflow.core import Exporter, hookimpl, lazy_module

# Imported when a model is exported, not when the exporters register (a config check needs no torch).
torch = lazy_module("torch")
nn = lazy_module("torch.nn")


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Export what inference sees (no dropout, BN running stats) without changing the caller's model."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


@contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch.jit.* warns that it is deprecated (FutureWarning, torch ≥ 2.9), and tracing timm's
    shape asserts raises TracerWarnings: both expected here, since TorchScript *is* the format
    asked for and the image size is fixed at export (only the batch dimension varies)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


# --- TorchScript --------------------------------------------------------------


def torchscript_export(model: nn.Module, example: torch.Tensor, dest: Path) -> list[Path]:
    path = Path(dest) / "model.torchscript.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _eval_mode(model), _quiet_jit():
        torch.jit.save(torch.jit.trace(model, example), str(path))
    return [path]


def torchscript_verify(files: Sequence[Path], example: torch.Tensor, rebuild: Callable[[], nn.Module]) -> torch.Tensor:
    with _quiet_jit():
        module = torch.jit.load(str(files[0]), map_location=example.device)
    module.eval()
    with torch.no_grad():
        return module(example)


# --- ONNX ---------------------------------------------------------------------


def onnx_export(model: nn.Module, example: torch.Tensor, dest: Path) -> list[Path]:
    """The torch.export-based exporter (the TorchScript one is deprecated since torch 2.9).

    The batch dimension is dynamic, so the file serves any batch size, including
    when the example has a single image. Initializers go to `model.onnx.data` next
    to the graph (needed past protobuf's 2 GB), so both files are returned.
    """
    import onnx

    path = Path(dest) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _eval_mode(model):
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            verbose=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    onnx.checker.check_model(str(path), full_check=True)  # by path, so external data is checked too
    return [p for p in (path, path.with_name(path.name + ".data")) if p.exists()]


def onnx_verify(files: Sequence[Path], example: torch.Tensor, rebuild: Callable[[], nn.Module]) -> torch.Tensor:
    import onnxruntime

    graph = next(Path(f) for f in files if Path(f).suffix == ".onnx")
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": example.detach().cpu().numpy()})
    return torch.from_numpy(logits).to(example.device)


# --- safetensors --------------------------------------------------------------


def _plain_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict as safetensors accepts it: contiguous CPU tensors, none sharing memory.

    Tied weights appear under each of their names; the second one is copied so
    that every key survives and `load_state_dict(strict=True)` sees them all.
    """
    tensors, seen = {}, set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[name] = tensor
    return tensors


def safetensors_export(model: nn.Module, example: torch.Tensor, dest: Path) -> list[Path]:
    from safetensors.torch import save_file

    path = Path(dest) / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(_plain_tensors(model), str(path), metadata={"format": "pt"})
    return [path]


def safetensors_verify(files: Sequence[Path], example: torch.Tensor, rebuild: Callable[[], nn.Module]) -> torch.Tensor:
    """Weights alone are not runnable: load them into a fresh model of the same architecture."""
    from safetensors.torch import load_file

    model = rebuild()
    model.load_state_dict(load_file(str(files[0])), strict=True)
    model.to(example.device).eval()
    with torch.no_grad():
        return model(example)


EXPORTERS = [
    Exporter(
        "torchscript",
        torchscript_export,
        torchscript_verify,
        "Traced TorchScript module (model.torchscript.pt), loadable without Python model code.",
    ),
    Exporter(
        "onnx",
        onnx_export,
        onnx_verify,
        "ONNX graph (model.onnx + model.onnx.data), dynamic batch, input 'images' → output 'logits'.",
    ),
    Exporter(
        "safetensors",
        safetensors_export,
        safetensors_verify,
        "state_dict as model.safetensors; needs the model family to rebuild the architecture.",
    ),
]


@hookimpl
def graft_exporters():
    return list(EXPORTERS)
