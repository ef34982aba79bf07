"""Freezing layer groups and the BatchNorm policy.

Freezing is `requires_grad=False` only: the optimizer keeps every group, so a
frozen group simply gets no gradient and AdamW/SGD skip it (weight decay too).
`FreezeSchedule` and `BatchNormPolicy` are the training callbacks that apply
them every epoch. BatchNorm needs its own rule, because a frozen BN layer in train mode still
updates its running statistics:
  - `train`: BN behaves normally (statistics update; weights train with their group),
  - `freeze-stats`: BN layers stay in eval mode, so running mean/var never change,
  - `freeze`: as freeze-stats, and BN's affine weights are frozen too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from graftflow.core.specs import LayerGroup
from graftflow.core.training.callbacks import Callback

if TYPE_CHECKING:
    from graftflow.core.training.loop import Loop

BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, BN_TYPES)]


def set_trainable(model: nn.Module, groups: Sequence[LayerGroup], trainable: set[str], bn: str = "train") -> None:
    """Freeze every layer group not named in `trainable`; with bn="freeze", BN weights stay frozen."""
    params = dict(model.named_parameters())
    for group in groups:
        for n in group.params:
            params[n].requires_grad_(group.name in trainable)
    if bn == "freeze":
        for layer in batchnorm_layers(model):
            for p in layer.parameters():
                p.requires_grad_(False)


def train_mode(model: nn.Module, bn: str) -> None:
    """model.train(), except that BN layers stay in eval mode unless bn="train"."""
    model.train()
    if bn != "train":
        for layer in batchnorm_layers(model):
            layer.eval()


def unfrozen_groups(groups: Sequence[LayerGroup], epoch: int, head_only_done: bool) -> set[str]:
    """Gradual unfreezing (ULMFiT): one more group per epoch, from the head down.

    `epoch` counts from 0 within the unfreezing phase; after head-only epochs the
    first epoch of this phase already trains the head and the group below it.
    """
    n = min(len(groups), epoch + 1 + int(head_only_done))
    return {g.name for g in groups[len(groups) - n :]}


class FreezeSchedule(Callback):
    """Which layer groups train each epoch.

    In a head-only phase only the last group (the head) trains. Otherwise every
    group does (`unfreeze: all`), or one more group per epoch from the head down
    (`unfreeze: gradual`, ULMFiT). Freezing is `requires_grad` only: the
    optimizer keeps every group, so schedules and optimizer state stay aligned.
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Sequence[LayerGroup],
        head_only_phases: Sequence[str] = (),
        unfreeze: str = "all",
        head_only_done: bool = False,
    ):
        self.model, self.groups = model, list(groups)
        self.head_only, self.unfreeze, self.head_only_done = set(head_only_phases), unfreeze, head_only_done

    def on_epoch_start(self, loop: Loop) -> None:
        if loop.phase in self.head_only:
            trainable = {self.groups[-1].name}
        elif self.unfreeze == "gradual":
            trainable = unfrozen_groups(self.groups, loop.epoch, self.head_only_done)
        else:
            trainable = {g.name for g in self.groups}
        set_trainable(self.model, self.groups, trainable)
        loop.record["trainable_groups"] = len(trainable)

    def on_fit_end(self, loop: Loop) -> None:
        set_trainable(self.model, self.groups, {g.name for g in self.groups})


class BatchNormPolicy(Callback):
    """`bn: train | freeze-stats | freeze` applied at every epoch start, after the freeze schedule."""

    def __init__(self, model: nn.Module, bn: str):
        self.model, self.bn = model, bn

    def on_epoch_start(self, loop: Loop) -> None:
        if self.bn == "freeze":
            for layer in batchnorm_layers(self.model):
                for p in layer.parameters():
                    p.requires_grad_(False)
        train_mode(self.model, self.bn)
