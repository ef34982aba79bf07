"""Which weights a run ends with: best epoch by a validation metric, and weight EMA."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")


class BestTracker:
    """Remembers the best epoch's weights by `monitor` (copied to CPU, so training memory is untouched)."""

    def __init__(self, monitor: str, min_delta: float = 0.0):
        self.monitor = monitor
        self.sign = -1.0 if lower_is_better(monitor) else 1.0
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.since_best = 0

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> bool:
        value = metrics.get(self.monitor)
        if value is None:
            return False
        if self.best is None or self.sign * (value - self.best) > self.min_delta:
            self.best, self.best_epoch, self.since_best = value, epoch, 0
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return True
        self.since_best += 1
        return False

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of weights and buffers (torch's own AveragedModel)."""
    return AveragedModel(copy.deepcopy(model), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
