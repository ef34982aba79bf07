"""The training loop: one function you can read in one sitting.

`step_fn(images, labels) → loss` is all a stage supplies (a classifier's
cross-entropy, a pretext task's objective), so supervised and self-supervised
training share this loop, its precision handling and its checks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader

from core.device import DevicePolicy
from core.errors import StageError

log = logging.getLogger("graft.train")


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def _lrs(optimizer: torch.optim.Optimizer) -> str:
    seen = dict.fromkeys(f"{g.get('layer_group', '?')}={g['lr']:.3g}" for g in optimizer.param_groups)
    return ", ".join(seen)


def train_epochs(
    model: nn.Module,
    step_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    policy: DevicePolicy,
    epochs: int,
    *,
    history: History,
    phase: str,
    batch_transform: Callable | None = None,
    validate: Callable[[], dict[str, float]] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> History:
    scaler = policy.make_scaler()
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=policy.torch_device)
        n_batches = 0
        for images, labels in loader:
            images, labels = policy.to_device(images), policy.to_device(labels)
            if batch_transform is not None:
                images, labels = batch_transform(images, labels)
            with policy.autocast():
                loss = step_fn(images, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach().float()
            n_batches += 1
            history.steps += 1
            if history.steps % 50 == 0:
                _check_finite(loss_sum, history.steps, optimizer)
        if n_batches == 0:
            raise StageError(f"{phase}: the training data gave no batch (fewer images than batch_size?)")
        _check_finite(loss_sum, history.steps, optimizer)
        seconds = time.perf_counter() - start
        history.seconds += seconds
        metrics = {"train_loss": float(loss_sum) / n_batches}
        if validate is not None:
            metrics.update(validate())
        epoch = len(history.epochs) + 1
        record = {"epoch": epoch, "phase": phase, "seconds": round(seconds, 3), **metrics}
        history.epochs.append(record)
        log.info("%s epoch %d: %s (%.1fs)", phase, epoch,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), seconds)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    return history


def _check_finite(loss_sum: torch.Tensor, step: int, optimizer: torch.optim.Optimizer) -> None:
    value = float(loss_sum)
    if not math.isfinite(value):
        raise StageError(f"non-finite loss by step {step} (learning rates: {_lrs(optimizer)}); lower the LR")


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, policy: DevicePolicy) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on CPU) and labels for every batch of `loader`."""
    model.eval()
    outputs, targets = [], []
    for images, labels in loader:
        with policy.autocast():
            logits = model(policy.to_device(images))
        outputs.append(logits.float().cpu())
        targets.append(labels)
    if not outputs:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(outputs), torch.cat(targets)


def accuracy_and_loss(model: nn.Module, loader: DataLoader, policy: DevicePolicy) -> dict[str, float]:
    logits, labels = predict(model, loader, policy)
    if len(labels) == 0:
        return {}
    return {
        "val_loss": float(nn.functional.cross_entropy(logits, labels)),
        "val_accuracy": float((logits.argmax(1) == labels).float().mean()),
    }
