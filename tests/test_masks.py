"""Masks: Kaggle's run-length encoding (Severstal: 1-indexed starts, column-major) and the store's mask column."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from graftflow.core.data.masks import (
    decode_mask,
    decode_mask_resized,
    encode_mask,
    masks_from_rle,
    rle_decode,
    rle_encode,
)
from graftflow.core.errors import DataError

SEVERSTAL = (256, 1600)


def test_severstal_numbering_is_one_indexed_and_column_major():
    mask = np.zeros((4, 3), dtype=bool)
    mask[1:3, 0] = True  # pixels 2 and 3 (down the first column)
    mask[0, 1] = True  # pixel 5: the top of the second column
    mask[3, 1], mask[0, 2] = True, True  # 8 and 9: a run across the column break
    assert rle_encode(mask) == "2 2 5 1 8 2"
    assert (rle_decode("2 2 5 1 8 2", (4, 3)) == mask).all()
    assert rle_encode(np.zeros((4, 3), bool)) == "" and not rle_decode("", (4, 3)).any()
    assert rle_encode(np.ones((4, 3), bool)) == "1 12"


@st.composite
def severstal_masks(draw):
    """Random masks of Severstal's 256×1600: noise of a random density, or a few random rectangles."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        return rng.random(SEVERSTAL) < draw(st.floats(0.0, 1.0))
    mask = np.zeros(SEVERSTAL, dtype=bool)
    for _ in range(draw(st.integers(0, 6))):
        y, x = rng.integers(0, SEVERSTAL[0]), rng.integers(0, SEVERSTAL[1])
        mask[y : y + rng.integers(1, 80), x : x + rng.integers(1, 400)] = True
    return mask


@settings(max_examples=25, deadline=None)
@given(severstal_masks())
def test_rle_round_trips_random_severstal_masks(mask):
    rle = rle_encode(mask)
    assert (rle_decode(rle, SEVERSTAL) == mask).all()
    numbers = [int(n) for n in rle.split()]
    assert sum(numbers[1::2]) == int(mask.sum())  # the lengths add up to the mask's pixels
    assert all(a < b for a, b in zip(numbers[::2], numbers[2::2], strict=False))  # starts increase


@pytest.mark.parametrize(
    ("rle", "message"),
    [("1 2 3", "odd count"), ("0 4", "outside"), ("11 5", "outside"), ("3 x", "not a run-length"), ("2 0", "outside")],
)
def test_malformed_rle_is_one_line_naming_the_field(rle, message):
    with pytest.raises(DataError, match=message) as info:
        rle_decode(rle, (3, 4), "train.csv row 7")
    assert str(info.value).startswith("train.csv row 7: ") and "\n" not in str(info.value)


def test_mask_png_keeps_overlapping_classes():
    rng = np.random.default_rng(1)
    for classes in (1, 4, 8, 11):
        masks = rng.random((classes, 9, 13)) < 0.4
        data = encode_mask(masks)
        assert Image.open(io.BytesIO(data)).format == "PNG"
        assert (decode_mask(data, classes) == masks).all()


def test_rows_of_one_class_are_joined():
    out = masks_from_rle({"2": ["1 2", "7 1"], "9": ["3 1"]}, ["1", "2", "3"], (3, 3), "x")
    assert out.shape == (3, 3, 3) and not out[0].any() and not out[2].any()
    assert out[1].flatten(order="F").tolist() == [1, 1, 0, 0, 0, 0, 1, 0, 0]


@pytest.mark.parametrize(
    "shape,classes,sizes",
    [((256, 1600), 4, (32, 64, 128, 256, 320)), ((37, 53), 3, (8, 16, 37, 64, 100)), ((9, 13), 11, (5, 13, 31))],
)
def test_masks_decoded_at_the_training_size_equal_decode_then_nearest_resize(shape, classes, sizes):
    """The loader's shortcut (index the PNG's bits at the picked pixels) gives exactly what decoding the
    full mask and resizing it with nearest-exact neighbours gives, on random masks, down- and upscaled."""
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    rng = np.random.default_rng(7)
    for trial in range(3):
        masks = rng.random((classes, *shape)) < (0.05 + 0.3 * trial)
        data = encode_mask(masks)
        full = torch.from_numpy(decode_mask(data, classes).astype(np.uint8))
        for size in sizes:
            expected = F.resize(full, [size, size], interpolation=InterpolationMode.NEAREST_EXACT).bool().numpy()
            got = decode_mask_resized(data, classes, size)
            assert got.shape == (classes, size, size) and got.dtype == bool
            assert (got == expected).all(), (shape, size)
