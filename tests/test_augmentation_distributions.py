"""Batch forms of the augmentations draw the same distributions as their per-sample counterparts.

`placement: batch` is meant to change where an op runs, not what it does to an image. For each op with a
batch form, one image is augmented many times by torchvision's per-sample op and by the batch form, and
statistics that each random parameter moves (which half is brighter: a flip; the mean and range of a
horizontal and a vertical ramp: a crop's position and size; mean, contrast and channel spread: jitter;
the erased fraction: erasing; the noise's spread) are compared with a two-sample Kolmogorov–Smirnov test.
Both sides work on float images, so torchvision's uint8 truncation is not mistaken for a difference.

A negative control shows each comparison can tell distributions apart: the batch form with a slightly
different parameter is rejected against the same per-sample draws. Seeds are fixed, so the p-values are
the same on every run.
"""

from __future__ import annotations

import pytest
import torch
from scipy.stats import ks_2samp

from graftflow.core.config import PluginRef
from graftflow.core.data.augmentation import augment_policy
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import AugmentContext

SAME = 1e-3  # every statistic's p-value above this: no evidence the distributions differ
DIFFERENT = 1e-6  # the control's smallest p-value below this: the comparison has the power to see a change

# (op, params, the control's batch params, draws, image size)
CASES = [
    ("horizontal-flip", {"p": 0.5}, {"p": 0.35}, 1000, 32),
    ("vertical-flip", {"p": 0.5}, {"p": 0.35}, 1000, 32),
    ("random-resized-crop", {"size": 16, "scale_min": 0.3}, {"size": 16, "scale_min": 0.4}, 2000, 96),
    (
        "color-jitter",
        {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
        {"brightness": 0.2, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
        600,
        16,
    ),
    ("color-jitter", {"brightness": 0, "contrast": 0, "saturation": 0, "hue": 0.1}, {"hue": 0.07}, 600, 16),
    ("gaussian-noise", {"sigma": 0.1}, {"sigma": 0.095}, 1000, 32),
    ("random-erasing", {"p": 0.5}, {"p": 0.5, "scale_max": 0.2}, 1000, 32),
]
IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(CASES)]


@pytest.fixture(scope="module")
def host():
    return PluginHost()


def build(host, name: str, placement: str, image_size: int, **params):
    ref = PluginRef.model_validate({"name": name, "placement": placement, **params})
    policy = augment_policy(host, [ref], "augment.train", "cpu", AugmentContext(4, image_size, 3))
    return (policy.sample or policy.batch)[0]


def ramps(size: int) -> torch.Tensor:
    """Red rises left to right, green top to bottom, blue is flat: position and extent show in the values."""
    line = torch.linspace(0.1, 0.9, size)
    return torch.stack([line.expand(size, size), line[:, None].expand(size, size), torch.full((size, size), 0.5)])


def statistics(out: torch.Tensor) -> dict[str, torch.Tensor]:
    half_w, half_h = out.shape[-1] // 2, out.shape[-2] // 2
    red, green = out[:, 0], out[:, 1]
    return {
        "mean": out.mean((1, 2, 3)),
        "std": out.std((1, 2, 3)),
        "red mean": red.mean((1, 2)),
        "red range": red.amax((1, 2)) - red.amin((1, 2)),
        "green mean": green.mean((1, 2)),
        "green range": green.amax((1, 2)) - green.amin((1, 2)),
        "left - right": out[..., :half_w].mean((1, 2, 3)) - out[..., half_w:].mean((1, 2, 3)),
        "top - bottom": out[..., :half_h, :].mean((1, 2, 3)) - out[..., half_h:, :].mean((1, 2, 3)),
        "channel spread": (out.amax(1) - out.amin(1)).mean((1, 2)),
        "erased": (out == 0).all(1).float().mean((1, 2)),
    }


def per_sample(host, name, params, n, size) -> dict[str, torch.Tensor]:
    op, image = build(host, name, "sample", size, **params), ramps(size)
    torch.manual_seed(0)
    return statistics(torch.stack([op(image) for _ in range(n)]))


def batched(host, name, params, n, size) -> dict[str, torch.Tensor]:
    op, images = build(host, name, "batch", size, **params), ramps(size).expand(n, -1, -1, -1).contiguous()
    torch.manual_seed(1)
    return statistics(op(images, torch.zeros(n, dtype=torch.long))[0])


def p_values(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """KS p-value of each statistic that varies at all (a constant one says nothing)."""
    varying = [k for k in a if float(a[k].std()) > 0 or float(b[k].std()) > 0]
    return {k: float(ks_2samp(a[k].numpy(), b[k].numpy()).pvalue) for k in varying}


@pytest.mark.parametrize("name, params, control, n, size", CASES, ids=IDS)
def test_batch_form_draws_the_per_sample_distribution(host, name, params, control, n, size):
    reference = per_sample(host, name, params, n, size)
    same = p_values(reference, batched(host, name, params, n, size))
    assert same and min(same.values()) > SAME, f"{name} {params}: batch and per-sample differ: {same}"
    changed = p_values(reference, batched(host, name, {**params, **control}, n, size))
    assert min(changed.values()) < DIFFERENT, f"{name}: the control {control} is not told apart: {changed}"
