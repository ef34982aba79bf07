"""What runs the network: the eager PyTorch model, or one of the run's exports (ONNX, TorchScript).

An engine is called with a normalised float32 batch (N, C, H, W) and returns the
logits (float32). All three get exactly the same preprocessed tensors, so their
predictions differ only by the numerics of the runtime.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from graftflow.core.device import DevicePolicy

ENGINES = ("eager", "onnx", "torchscript")


class EagerEngine:
    """The PyTorch model on the policy's device, under its autocast (as evaluate runs it)."""

    name = "eager"

    def __init__(self, model: nn.Module, policy: DevicePolicy):
        self.model = policy.prepare(model).eval()
        self.policy = policy

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with self.policy.autocast():
            return self.model(self.policy.to_device(images)).float()


class OnnxEngine:
    """An ONNX export through onnxruntime (CUDA when the policy is on CUDA and the runtime has it)."""

    name = "onnx"

    def __init__(self, path: Path, policy: DevicePolicy):
        import onnxruntime

        providers = ["CPUExecutionProvider"]
        if policy.device_type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self.input: images.detach().cpu().float().contiguous().numpy()})
        return torch.from_numpy(logits).float()


class TorchScriptEngine:
    """A traced TorchScript export, loaded onto the policy's device."""

    name = "torchscript"

    def __init__(self, path: Path, policy: DevicePolicy):
        with warnings.catch_warnings():  # torch.jit.* is deprecated (torch ≥ 2.9), and is the format asked for
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
            self.module = torch.jit.load(str(path), map_location=policy.torch_device).eval()
        self.policy = policy

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.module(images.to(self.policy.torch_device)).float()
