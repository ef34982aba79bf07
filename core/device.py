"""How a run uses the hardware, decided once so plugins never have to.

Rules (DESIGN.md): bf16 autocast on CUDA capability ≥ 8.0, fp16 with a grad
scaler below it, fp32 on CPU/MPS; channels_last for conv nets on CUDA; pinned
memory and non-blocking copies on CUDA; cudnn autotune. The probing of the
machine is separated from the decision (`resolve_policy` takes a `Hardware`)
so the CUDA branches are tested on a machine without a GPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch

from graftflow.core.errors import ConfigError


@dataclass(frozen=True)
class Hardware:
    cuda_count: int
    cuda_capability: tuple[int, int] | None
    cuda_name: str | None
    cuda_memory_gib: float | None
    mps: bool

    @classmethod
    def probe(cls) -> Hardware:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count:
            props = torch.cuda.get_device_properties(0)
            return cls(count, (props.major, props.minor), props.name, round(props.total_memory / 2**30, 1), False)
        mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
        return cls(0, None, None, None, mps)


@dataclass(frozen=True)
class DevicePolicy:
    device: str
    precision: str  # "bf16", "fp16" or "fp32"
    channels_last: bool
    pin_memory: bool
    grad_scaler: bool
    accelerator: str
    memory_gib: float | None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def device_type(self) -> str:
        return self.torch_device.type

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device_type, dtype=dtype)

    def make_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.grad_scaler)

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.torch_device, non_blocking=self.pin_memory)
        if self.channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.torch_device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def as_summary(self) -> dict:
        return asdict(self)


def resolve_policy(device: str, precision: str, hardware: Hardware, conv_net: bool = True) -> DevicePolicy:
    if device == "auto":
        device = "cuda" if hardware.cuda_count else ("mps" if hardware.mps else "cpu")
    kind = device.split(":")[0]
    if kind == "cuda":
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= hardware.cuda_count:
            raise ConfigError(f"device: '{device}' requested but this machine has {hardware.cuda_count} CUDA device(s)")
    if kind == "mps" and not hardware.mps:
        raise ConfigError("device: 'mps' requested but MPS is not available here")

    if precision == "auto":
        if kind == "cuda":
            precision = "bf16" if hardware.cuda_capability and hardware.cuda_capability >= (8, 0) else "fp16"
        else:
            precision = "fp32"
    if kind == "cpu" and precision == "fp16":
        raise ConfigError("precision: fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if kind == "cuda" and precision == "bf16" and hardware.cuda_capability and hardware.cuda_capability < (8, 0):
        raise ConfigError(f"precision: bf16 needs CUDA capability >= 8.0, this GPU has {hardware.cuda_capability}")

    on_cuda = kind == "cuda"
    return DevicePolicy(
        device=device,
        precision=precision,
        channels_last=on_cuda and conv_net,
        pin_memory=on_cuda,
        grad_scaler=on_cuda and precision == "fp16",
        accelerator=hardware.cuda_name if on_cuda else ("Apple MPS" if kind == "mps" else "cpu"),
        memory_gib=hardware.cuda_memory_gib if on_cuda else None,
    )


def apply_backend_settings(policy: DevicePolicy) -> None:
    if policy.device_type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
