"""The LR range test (Smith 2017; fastai's `lr_find`).

The LR grows exponentially from `start` to `end` over at most `steps` batches
while the smoothed loss is recorded; the test stops once the loss diverges.
Model and optimizer are restored afterwards, so the test never changes
the weights it was run on. With discriminative LRs every group keeps its
configured ratio to the head; the LRs reported are the head's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from graftflow.core.device import DevicePolicy


@dataclass
class RangeTest:
    lrs: list[float]
    losses: list[float]  # smoothed, bias-corrected

    def suggestions(self) -> dict[str, float]:
        """`steepest`: where the loss falls fastest (before its minimum); `min_loss_div10`: fastai's other rule."""
        lrs, losses = np.array(self.lrs), np.array(self.losses)
        if len(lrs) < 3:
            return {}
        lowest = int(losses.argmin())
        skip = max(1, len(lrs) // 10)  # the first smoothed points are noise (fastai skips them too)
        if lowest - skip >= 2:
            window = slice(skip, lowest + 1)
            slope = np.gradient(losses[window], np.log10(lrs[window]))
            steepest = float(lrs[skip + int(slope.argmin())])
        else:
            steepest = float(lrs[lowest] / 10)
        return {"steepest": steepest, "min_loss_div10": float(lrs[lowest] / 10), "min_loss": float(lrs[lowest])}


def lr_range_test(
    model: nn.Module,
    step_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    policy: DevicePolicy,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    smooth: float = 0.98,
    diverge: float = 4.0,
) -> RangeTest:
    saved_model = copy.deepcopy(model.state_dict())
    saved_optim = copy.deepcopy(optimizer.state_dict())
    head_base = optimizer.param_groups[-1].get("base_lr", optimizer.param_groups[-1]["lr"])
    ratios = [g.get("base_lr", g["lr"]) / head_base for g in optimizer.param_groups]
    lrs, losses = [], []
    average, best = 0.0, math.inf
    try:
        batches = _cycle(loader)
        model.train()
        for i in range(steps):
            lr = start * (end / start) ** (i / max(steps - 1, 1))
            for group, ratio in zip(optimizer.param_groups, ratios, strict=False):
                group["lr"] = lr * ratio
            images, labels = next(batches)
            images, labels = policy.to_device(images), policy.to_device(labels)
            with policy.autocast():
                loss = step_fn(images, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            average = smooth * average + (1 - smooth) * value
            smoothed = average / (1 - smooth ** (i + 1))
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if smoothed > diverge * best and i > 2:
                break
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optim)
    return RangeTest(lrs, losses)


def _cycle(loader: DataLoader):
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("the loader is empty")


def save_plot(result: RangeTest, path, suggested: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(result.lrs, result.losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (head group)")
    ax.set_ylabel("smoothed training loss")
    ax.axvline(suggested, color="red", linestyle="--", label=f"suggested {suggested:.2e}")
    ax.legend()
    ax.set_title("LR range test")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
