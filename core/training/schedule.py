"""Learning-rate schedules that scale every group by its own factor.

A group's LR is `base_lr × factor(step)`; `base_lr` is set per layer group when
the optimizer is built. No library-private field (such as `lr_scale`) is
involved, and the only state is the step, which makes resume trivial.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer

from graftflow.core.specs import VAL_LOSS, Monitor


def factor(kind: str, step: int, total: int, warmup: float) -> float:
    total = max(total, 1)
    t = min(step / total, 1.0)
    if kind == "one-cycle":  # fastai: cosine up from 1/25, cosine down to 1/(25·1e5)
        start, end = 1 / 25, 1 / (25 * 1e5)
        if warmup > 0 and t < warmup:
            return _cos(start, 1.0, t / warmup)
        return _cos(1.0, end, (t - warmup) / (1 - warmup))
    if kind == "cosine":  # linear warm-up, then cosine to zero
        if warmup > 0 and t < warmup:
            return (step + 1) / max(warmup * total, 1)
        return _cos(1.0, 0.0, (t - warmup) / (1 - warmup))
    if kind == "constant":
        return 1.0
    raise ValueError(f"unknown schedule {kind}")


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2 * (1 + math.cos(math.pi * min(max(pct, 0.0), 1.0)))


class GroupScheduler:
    """Sets every group's LR to `base_lr × factor` after each step.

    "plateau" is constant after warm-up and multiplies its factor by
    `plateau_factor` when the monitored metric has not improved for
    `plateau_patience` epochs (torch's ReduceLROnPlateau rule, applied to
    every group's own base LR).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        kind: str,
        total_steps: int,
        warmup: float,
        monitor: Monitor = VAL_LOSS,
        plateau_patience: int = 1,
        plateau_factor: float = 0.5,
    ):
        self.optimizer, self.kind, self.total, self.warmup = optimizer, kind, total_steps, warmup
        self.monitor, self.patience, self.reduce_by = monitor, plateau_patience, plateau_factor
        self.step_count = 0
        self.plateau_scale = 1.0
        self.best: float | None = None
        self.bad_epochs = 0
        self._apply()

    def _apply(self) -> None:
        if self.kind == "plateau":
            f = factor("cosine", self.step_count, self.total, self.warmup) if self._warming() else 1.0
            f *= self.plateau_scale
        else:
            f = factor(self.kind, self.step_count, self.total, self.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * f

    def _warming(self) -> bool:
        return self.warmup > 0 and self.step_count < self.warmup * self.total

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def epoch_end(self, metrics: dict[str, float]) -> None:
        value = metrics.get(self.monitor.name)
        if self.kind != "plateau" or value is None:
            return
        if self.monitor.better(value, self.best):
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            self.plateau_scale *= self.reduce_by
            self.bad_epochs = 0
            self._apply()

    def state_dict(self) -> dict:
        return {
            "kind": self.kind,
            "total": self.total,
            "warmup": self.warmup,
            "step_count": self.step_count,
            "plateau_scale": self.plateau_scale,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_scale = float(state.get("plateau_scale", 1.0))
        self.best, self.bad_epochs = state.get("best"), int(state.get("bad_epochs", 0))
        self._apply()
