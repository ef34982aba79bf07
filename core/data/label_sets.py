"""Multi-label targets: a label set per image, batched as multi-hot vectors."""

from __future__ import annotations

import torch


class MultiHotDataset:
    """(image, multi-hot float vector) pairs of a multi-label store's selection: the multilabel task's dataset.

    Images decode, augment and normalise exactly as a classifier's (`ArrowImageDataset`);
    the target of image i is 1.0 at every class of its label set (an empty set: all zeros).
    """

    def __init__(self, sel, channels: int, image_size: int, sample_transforms=(), normalize=None, cache=False):
        from graftflow.core.data.dataset import ArrowImageDataset

        self.images = ArrowImageDataset(sel, channels, image_size, sample_transforms, normalize, cache=cache)
        self.targets = torch.zeros((len(sel), len(sel.class_names)), dtype=torch.float32)
        for i, labels in enumerate(sel.targets.to_pylist()):
            self.targets[i, labels] = 1.0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i][0], self.targets[i]
