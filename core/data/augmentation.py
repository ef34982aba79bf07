"""Augmentation ops built from a checked plan: per-sample ops for DataLoader workers, batch ops for the device.

`core.validation.augmentation_plan` decides where each entry runs (and rejects
what cannot run); this module only builds the ops and the batch pipeline
(uint8 → float [0, 1] → each batch op → normalisation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from graftflow.core.config import PluginRef
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import AugmentContext
from graftflow.core.validation import augmentation_plan


@dataclass
class AugmentPolicy:
    """A section of `augment` resolved: per-sample ops (workers) and batch ops (device), in order."""

    sample: list[Callable]
    batch: list[Callable]
    entries: list[dict[str, Any]]  # name, placement (resolved), params: for policy.json
    soft_targets: bool = False


def augment_policy(
    host: PluginHost,
    refs: Sequence[PluginRef],
    section: str,
    device_type: str = "cpu",
    context: AugmentContext | None = None,
    training: bool = True,
    baked: bool = False,
    masks: bool = False,
) -> AugmentPolicy:
    """Build each entry's op where the plan places it.

    `baked=True` (training on `augment.materialize`d copies): ops with a per-sample form
    are already in the images and are left out; batch-only ops (MixUp, CutMix) remain.
    `masks=True`: the batches' labels are masks (see `augmentation_plan`).
    """
    context = context or AugmentContext(num_classes=0, image_size=0, channels=0)
    policy = AugmentPolicy([], [], [])
    for step in augmentation_plan(host, refs, section, device_type, training, masks):
        spec = step.spec
        if baked and step.has_sample_form:
            continue
        kwargs = dict(step.params, context=context) if spec.uses_context else step.params
        if step.placement == "batch":
            policy.batch.append((spec.factory if spec.placement == "batch" else spec.batch_factory)(**kwargs))
        else:
            policy.sample.append(spec.factory(**kwargs))
        policy.entries.append({"name": spec.name, "placement": step.placement, **step.params})
        policy.soft_targets = policy.soft_targets or (spec.soft_targets and not masks)
    return policy


def sample_transforms(host: PluginHost, refs: Sequence[PluginRef], section: str) -> tuple[list, list]:
    """Split a policy into per-sample transforms (DataLoader workers) and batch ops (on the device)."""
    policy = augment_policy(host, refs, section, training=section.endswith("train"))
    return policy.sample, policy.batch


class BatchTransform:
    """uint8 batches → float [0, 1] → each op → `normalize`; picklable, so workers can run it."""

    def __init__(self, ops: Sequence[Callable], normalize: Callable | None = None):
        self.ops, self.normalize = list(ops), normalize

    def __call__(self, images: torch.Tensor, labels: torch.Tensor):
        if not images.is_floating_point():
            images = images.float().div_(255)
        for op in self.ops:
            images, labels = op(images, labels)
        if self.normalize is not None:
            images = self.normalize(images)
        return images, labels


def compose_batch(ops: Sequence[Callable], normalize: Callable | None = None) -> Callable | None:
    return BatchTransform(ops, normalize) if ops else None


class BatchNormalize:
    """Normalise a float [0, 1] batch on whatever device it is on."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int):
        def per_channel(values: Sequence[float]) -> list[float]:
            return list(values) * channels if len(values) == 1 else list(values)

        self.mean = torch.tensor(per_channel(mean)).view(1, -1, 1, 1)
        self.std = torch.tensor(per_channel(std)).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.mean.to(images.device)).div_(self.std.to(images.device))  # one new tensor, not two


batch_normalizer = BatchNormalize
