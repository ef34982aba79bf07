"""Which weights a stage ends with: the best epoch by a validation metric, early stopping, and weight EMA."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from graftflow.core.specs import Monitor
from graftflow.core.training.callbacks import Callback

if TYPE_CHECKING:
    from graftflow.core.training.loop import Loop

log = logging.getLogger("graft.train")


class BestTracker:
    """Remembers the best epoch's weights by `monitor` (copied to CPU, so training memory is untouched).

    Which way is better is the `Monitor`'s declared mode (the task's or the method's spec), not a
    guess from the metric's name: a plugin's `val_mae` is minimised, its `val_f1` maximised.
    """

    def __init__(self, monitor: Monitor, min_delta: float = 0.0):
        self.monitor = monitor
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None
        self.since_best = 0

    def update(self, epoch: int, metrics: dict[str, float], model: nn.Module) -> bool:
        value = metrics.get(self.monitor.name)
        if value is None:
            return False
        if self.monitor.better(value, self.best, self.min_delta):
            self.best, self.best_epoch, self.since_best = value, epoch, 0
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return True
        self.since_best += 1
        return False

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


class BestEpoch(Callback):
    """Tracks the best epoch of `model` (what validation scores: the EMA when there is one) by `monitor`."""

    state_key = "best"

    def __init__(self, model: nn.Module, monitor: Monitor):
        self.model, self.tracker = model, BestTracker(monitor)

    @property
    def best_epoch(self) -> int | None:
        return self.tracker.best_epoch

    @property
    def since_best(self) -> int:
        return self.tracker.since_best

    def on_epoch_end(self, loop: Loop) -> None:
        self.tracker.update(loop.history.epochs[-1]["epoch"], loop.metrics, self.model)

    def restore_if_not_last(self, epochs_run: int) -> bool:
        """Load the best epoch's weights unless the last epoch was the best; True when it did."""
        if self.tracker.state is None or self.tracker.best_epoch == epochs_run:
            return False
        self.tracker.restore(self.model)
        return True

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        t = self.tracker
        return dict(t.state or {}), {"best": t.best, "best_epoch": t.best_epoch, "since_best": t.since_best}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        t = self.tracker
        t.best, t.best_epoch, t.since_best = values["best"], values["best_epoch"], values["since_best"]
        t.state = tensors or None


class EarlyStopping(Callback):
    """Stops the stage after `patience` epochs in which `best` saw no improvement (later phases are skipped too)."""

    def __init__(self, best: BestEpoch, patience: int):
        self.best, self.patience = best, patience

    def on_epoch_end(self, loop: Loop) -> None:
        if self.best.since_best >= self.patience:
            loop.should_stop = loop.history.stopped_early = True
            log.info("%s: early stop after epoch %d", loop.phase, loop.history.epochs[-1]["epoch"])


def make_ema(model: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of weights and buffers (torch's own AveragedModel)."""
    return AveragedModel(copy.deepcopy(model), multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class WeightEMA(Callback):
    """Keeps an exponential moving average of `model`'s weights, updated after every step; `module` is the average."""

    state_key = "ema"

    def __init__(self, model: nn.Module, decay: float):
        self.model, self.averaged = model, make_ema(model, decay)

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    def on_step_end(self, loop: Loop) -> None:
        self.averaged.update_parameters(self.model)

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return dict(self.averaged.state_dict()), {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        self.averaged.load_state_dict(tensors)
