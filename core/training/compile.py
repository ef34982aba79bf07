"""`compile: true`: torch.compile where it works, eager where it does not.

torch.compile compiles lazily, on the first call, so that is where a failure
(no C++ compiler, an unsupported op) shows up. The first failure falls back
to the eager module for the rest of the run, with a warning and the reason
recorded, instead of failing a long training run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

log = logging.getLogger("graft.train")


def compiled_forward(model: nn.Module, enabled: bool) -> tuple[Callable[..., torch.Tensor], dict[str, Any]]:
    status: dict[str, Any] = {"requested": enabled, "compiled": False, "error": None}
    if not enabled:
        return model, status
    try:
        compiled = torch.compile(model)
    except Exception as exc:  # e.g. an unsupported Python or platform
        return _fallback(model, status, exc), status
    current: dict[str, Callable] = {"fn": compiled}

    def forward(*inputs: torch.Tensor) -> torch.Tensor:
        if current["fn"] is compiled:
            try:
                out = compiled(*inputs)
                status["compiled"] = True
                return out
            except Exception as exc:
                current["fn"] = _fallback(model, status, exc)
        return current["fn"](*inputs)

    return forward, status


def _fallback(model: nn.Module, status: dict[str, Any], exc: Exception) -> nn.Module:
    status["compiled"] = False
    status["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
    log.warning("torch.compile failed, training eagerly instead: %s", status["error"])
    return model
