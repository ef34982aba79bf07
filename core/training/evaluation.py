"""Validation every epoch: the stage's own loss and accuracy on the validation split.

`val_loss` is the loss the stage trains with (focal, label-smoothed cross-entropy,
distillation, ...), computed the same way on held-out images, so early stopping,
plateau schedules and best-epoch selection judge what training optimises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import DataLoader

from graftflow.core.device import DevicePolicy
from graftflow.core.training.callbacks import Callback
from graftflow.core.training.losses import StageLoss

if TYPE_CHECKING:
    from graftflow.core.training.loop import Loop


@torch.no_grad()
def loss_and_accuracy(model: nn.Module, loader: DataLoader, loss: StageLoss, policy: DevicePolicy) -> dict[str, float]:
    """Mean `loss` per image and top-1 accuracy of `model` over `loader` (empty when it has no image)."""
    model.eval()
    total, correct, seen = 0.0, 0, 0
    for images, labels in loader:
        images, labels = policy.to_device(images), policy.to_device(labels)
        with policy.autocast():
            logits = model(images)
            value = loss(logits, labels, inputs=images)
        total += float(value) * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    if not seen:
        return {}
    return {"val_loss": total / seen, "val_accuracy": correct / seen}


class Validation(Callback):
    """Adds the validation metrics of `model` on `loader` to every epoch's metrics.

    `measure(model, loader, loss, policy)` computes them: the task's (`TaskSpec.validate`);
    by default `val_loss` and `val_accuracy` of a classifier.
    """

    def __init__(
        self,
        model: nn.Module,
        loader: DataLoader,
        loss: StageLoss,
        policy: DevicePolicy,
        measure: Callable[..., dict[str, float]] = loss_and_accuracy,
    ):
        self.model, self.loader, self.loss, self.policy, self.measure = model, loader, loss, policy, measure

    def on_validate(self, loop: Loop) -> None:
        loop.metrics.update(self.measure(self.model, self.loader, self.loss, self.policy))


@torch.no_grad()
def mean_entropy(model: nn.Module, loader: DataLoader, policy: DevicePolicy) -> float | None:
    """Mean entropy of `model`'s class probabilities over `loader`: a score that needs no labels."""
    model.eval()
    total, seen = 0.0, 0
    for images, _ in loader:
        with policy.autocast():
            probs = model(policy.to_device(images)).float().softmax(1)
        total += float(-(probs * probs.clamp_min(1e-12).log()).sum(1).sum())
        seen += len(probs)
    return total / seen if seen else None


class TargetEntropy(Callback):
    """`target_entropy` of `model` on the unlabelled target domain's val rows, every epoch (lower: more confident).

    Model selection for domain adaptation cannot use target labels; prediction
    entropy on the target is the unsupervised score recorded beside source validation.
    """

    def __init__(self, model: nn.Module, loader: DataLoader, policy: DevicePolicy):
        self.model, self.loader, self.policy = model, loader, policy

    def on_validate(self, loop: Loop) -> None:
        value = mean_entropy(self.model, self.loader, self.policy)
        if value is not None:
            loop.metrics["target_entropy"] = value
