"""Deterministic stratified train/val/test assignment.

Within each class, images are ordered by content hash and then shuffled with
the split seed, so the split depends on the images and the seed, never on the
order a filesystem or server happened to list them.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence


def stratified_split(labels: Sequence[int], keys: Sequence[str], val: float, test: float, seed: int) -> list[str]:
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    assignment = ["train"] * len(labels)
    for label in sorted(by_class):
        members = sorted(by_class[label], key=lambda i: keys[i])
        random.Random(f"{seed}:{label}").shuffle(members)
        n = len(members)
        n_test = min(round(n * test), max(n - 1, 0))
        n_val = min(round(n * val), max(n - 1 - n_test, 0))
        for i in members[:n_test]:
            assignment[i] = "test"
        for i in members[n_test : n_test + n_val]:
            assignment[i] = "val"
    return assignment
