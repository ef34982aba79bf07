"""Optimizer parameter groups built from a family's layer groups.

All groups are created once, at the start: freezing is `requires_grad`, never
a rebuilt optimizer, so schedules and resumed optimizer state stay aligned.
Each layer group becomes up to two optimizer groups (with and without weight
decay: norms, biases and timm's `no_weight_decay()` names get none), and both
carry the layer group's own learning rate in `base_lr`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from graftflow.core.specs import LayerGroup


def spread_lrs(lr: float | Sequence[float], n: int) -> list[float]:
    """One LR per group, input→head. `[lo, hi]` is spread geometrically like fastai's `slice(lo, hi)`."""
    if isinstance(lr, (int, float)):
        return [float(lr)] * n
    lo, hi = lr
    if n == 1:
        return [float(hi)]
    step = (hi / lo) ** (1 / (n - 1))
    return [lo * step**i for i in range(n)]


def group_lrs(lr: float | Sequence[float], n: int, layer_decay: float | None = None) -> list[float]:
    """LRs input→head: `[lo, hi]` spread geometrically, or `lr × decay^(groups above)` with layer decay.

    Layer decay matches timm's `param_groups_layer_decay`: the head group gets
    `lr`, the group below it `lr × decay`, the first group `lr × decay^(n−1)`.
    """
    if layer_decay is None:
        return spread_lrs(lr, n)
    return [float(lr) * layer_decay ** (n - 1 - i) for i in range(n)]


@dataclass(frozen=True)
class GroupRecord:
    name: str
    lr: float
    n_params: int


def build_param_groups(
    model: nn.Module, groups: Sequence[LayerGroup], lrs: Sequence[float], weight_decay: float
) -> tuple[list[dict], list[GroupRecord]]:
    params = dict(model.named_parameters())
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    opt_groups: list[dict] = []
    records: list[GroupRecord] = []
    for group, lr in zip(groups, lrs, strict=True):
        decay = [params[n] for n in group.params if params[n].ndim > 1 and n not in skip]
        no_decay = [params[n] for n in group.params if params[n].ndim <= 1 or n in skip]
        for subset, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if subset:
                opt_groups.append(
                    {"params": subset, "lr": lr, "base_lr": lr, "weight_decay": wd, "layer_group": group.name}
                )
        records.append(GroupRecord(group.name, lr, sum(params[n].numel() for n in group.params)))
    return opt_groups, records


def make_optimizer(kind: str, param_groups: list[dict], momentum: float):
    import torch

    if kind == "sgd":
        return torch.optim.SGD(param_groups, lr=param_groups[0]["lr"], momentum=momentum)
    return torch.optim.AdamW(param_groups, lr=param_groups[0]["lr"])
