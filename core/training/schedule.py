"""Learning-rate schedules that scale every group by its own factor.

A group's LR is `base_lr × factor(step)`; `base_lr` is set per layer group when
the optimizer is built. No library-private field (such as `lr_scale`) is
involved, and the only state is the step, which makes resume trivial.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer


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
    def __init__(self, optimizer: Optimizer, kind: str, total_steps: int, warmup: float):
        self.optimizer, self.kind, self.total, self.warmup = optimizer, kind, total_steps, warmup
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        f = factor(self.kind, self.step_count, self.total, self.warmup)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * f

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def state_dict(self) -> dict:
        return {"kind": self.kind, "total": self.total, "warmup": self.warmup, "step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()
