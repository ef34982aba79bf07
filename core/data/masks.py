"""Segmentation masks: Kaggle's run-length encoding, and the encoded mask column of the data store.

Run-length encoding as Severstal's `train.csv` writes it (`EncodedPixels`):
pixels are numbered from 1, top to bottom and then left to right (column-major,
Fortran order), and the string is `start length start length ...` of the runs
of mask pixels. An empty string is an empty mask.

In the store a mask is one PNG per image at the image's size: a uint8 (or, past
8 classes, uint16) image whose bit `c` is set where class `c` is present, so
overlapping classes survive and the column is as small as PNG makes it. The
PNG's bytes are part of the row's identity, like the image's sha256.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Mapping, Sequence

import numpy as np

from graftflow.core.errors import DataError

MAX_CLASSES = 16  # bits of a 16-bit PNG


def rle_encode(mask: np.ndarray) -> str:
    """A 2-D boolean mask → `start length ...` (1-indexed starts, column-major); "" for an empty mask."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flat, [0]]))) + 1
    edges[1::2] -= edges[::2]
    return " ".join(map(str, edges.tolist()))


def rle_decode(rle: str | None, shape: tuple[int, int], where: str = "EncodedPixels") -> np.ndarray:
    """`start length ...` → a boolean (H, W) mask; a malformed string is a DataError naming `where`."""
    height, width = shape
    flat = np.zeros(height * width, dtype=bool)
    text = (rle or "").strip()
    if not text:
        return flat.reshape((height, width), order="F")
    try:
        numbers = np.array(text.split(), dtype=np.int64)
    except ValueError:
        raise DataError(f"{where}: '{text[:40]}' is not a run-length encoding (numbers: start length ...)") from None
    if len(numbers) % 2:
        raise DataError(f"{where}: an odd count of numbers ({len(numbers)}); expected start length pairs")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    if (starts < 0).any() or (lengths < 1).any() or (starts + lengths > flat.size).any():
        raise DataError(f"{where}: a run falls outside the {height}×{width} image (starts are 1-indexed)")
    edges = np.zeros(flat.size + 1, dtype=np.int32)  # +1 where a run starts, −1 after it ends: covered = sum > 0
    np.add.at(edges, starts, 1)
    np.add.at(edges, starts + lengths, -1)
    return (np.cumsum(edges[:-1]) > 0).reshape((height, width), order="F")


def encode_mask(masks: np.ndarray) -> bytes:
    """(C, H, W) booleans → the store's PNG: bit c of each pixel is class c."""
    from PIL import Image

    masks = np.asarray(masks, dtype=bool)
    if masks.shape[0] > MAX_CLASSES:
        raise DataError(f"a mask store holds at most {MAX_CLASSES} classes, got {masks.shape[0]}")
    dtype = np.uint8 if masks.shape[0] <= 8 else np.uint16
    bits = (masks.astype(dtype) << np.arange(masks.shape[0], dtype=dtype)[:, None, None]).sum(0).astype(dtype)
    buffer = io.BytesIO()
    Image.fromarray(bits).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_mask(data: bytes, classes: int) -> np.ndarray:
    """The store's PNG → (C, H, W) booleans."""
    return unpack_bits(_png_bits(data), classes)


def decode_mask_resized(data: bytes, classes: int, size: int) -> np.ndarray:
    """The store's PNG → (C, size, size) booleans, the same as `decode_mask` then a nearest-exact resize.

    Nearest neighbours only pick source pixels, so the bit image is indexed once at the
    picked rows and columns and only the small grid is unpacked into classes: for a
    4-class Severstal 256×1600 mask at a training size of 128 that is 2 ms instead of
    26 ms for unpacking the full-size masks and resizing them (measured on the shared
    cores, load ~7), the segmentation loader's main cost.
    """
    return unpack_bits(resized_bits(data, size), classes)


def resized_bits(data: bytes, size: int) -> np.ndarray:
    """The store's PNG → its (size, size) bit image, nearest-exact: what `decode_mask_resized` unpacks."""
    bits = _png_bits(data)
    rows, cols = nearest_exact_index(bits.shape[0], size), nearest_exact_index(bits.shape[1], size)
    return bits[np.ix_(rows, cols)]


def _png_bits(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


def unpack_bits(bits: np.ndarray, classes: int) -> np.ndarray:
    """A (H, W) bit image (bit c = class c) → (classes, H, W) booleans."""
    return ((bits.astype(np.int32)[None] >> np.arange(classes, dtype=np.int32)[:, None, None]) & 1).astype(bool)


@functools.lru_cache(maxsize=64)
def nearest_exact_index(length: int, size: int) -> np.ndarray:
    """The source index of each of `size` outputs that torch's `nearest-exact` resize of `length` picks.

    Taken from torch itself (a resize of the index ramp), so it matches
    `F.resize(..., NEAREST_EXACT)` exactly, rounding included.
    """
    import torch

    ramp = torch.arange(length, dtype=torch.float32).view(1, 1, length)
    picked = torch.nn.functional.interpolate(ramp, size=size, mode="nearest-exact")
    return picked.view(size).long().numpy()


def masks_from_rle(
    runs: Mapping[str, Sequence[str]], class_names: Sequence[str], shape: tuple[int, int], where: str
) -> np.ndarray:
    """class name → its RLE strings (several rows of one class are OR-ed) → (C, H, W) booleans."""
    out = np.zeros((len(class_names), *shape), dtype=bool)
    for c, name in enumerate(class_names):
        for rle in runs.get(name, ()):
            out[c] |= rle_decode(rle, shape, f"{where} class {name}")
    return out


class MaskDataset:
    """(image, masks) pairs of a mask store's selection: the segmentation task's dataset.

    Images decode exactly as a classifier's do (`ArrowImageDataset`, its decoded cache
    included); masks decode from the store's PNG straight at the training size
    (`decode_mask_resized`: nearest neighbours). With `cache=True` the decoded masks are
    kept too, as their small bit images in one shared-memory tensor filled on first
    access like the image cache, so later epochs unpack bits instead of decoding PNGs.
    Sample augmentations that are torchvision v2 transforms run on `(tv_tensors.Image,
    tv_tensors.Mask)` together, so flips, affine and crops move image and mask alike while
    colour ops leave the mask alone; any other callable sees the image only.
    Returns a normalised float image (C, S, S) and float masks (classes, S, S) in {0, 1}.
    """

    def __init__(self, sel, channels: int, image_size: int, sample_transforms=(), normalize=None, cache=False):
        import torch
        from torchvision.transforms import v2

        from graftflow.core.data.dataset import ArrowImageDataset, _shared_memory_fits

        self.pixels = ArrowImageDataset(sel, channels, image_size, (), None, cache=cache)
        self.masks, self.classes, self.image_size = sel.targets, len(sel.class_names), image_size
        self.joint = [t for t in sample_transforms if isinstance(t, v2.Transform)]
        self.image_only = [t for t in sample_transforms if not isinstance(t, v2.Transform)]
        self.normalize = normalize
        self._torch = torch
        self.cached_bits = self.filled = None
        if cache:
            dtype = torch.uint8 if self.classes <= 8 else torch.int32
            shape = (len(self.pixels), image_size, image_size)
            nbytes = int(np.prod(shape)) * (1 if dtype == torch.uint8 else 4)
            if _shared_memory_fits(nbytes + len(self.pixels)):
                self.cached_bits = torch.empty(shape, dtype=dtype).share_memory_()
                self.filled = torch.zeros(len(self.pixels), dtype=torch.bool).share_memory_()

    def __len__(self) -> int:
        return len(self.pixels)

    def _bits(self, i: int):
        """Mask `i`'s bit image at (S, S), from the shared cache when there is one."""
        if self.cached_bits is not None and self.filled[i]:
            return self.cached_bits[i]
        small = self._torch.from_numpy(resized_bits(self.masks[i].as_py(), self.image_size).astype(np.int32))
        if self.cached_bits is not None:
            self.cached_bits[i] = small.to(self.cached_bits.dtype)
            self.filled[i] = True  # after the bits: a reader that sees the flag sees the mask
            return self.cached_bits[i]
        return small

    def mask(self, i: int):
        """Mask `i` as uint8 (classes, S, S), resized with nearest neighbours."""
        bits = self._bits(i).to(self._torch.int32)
        shifts = self._torch.arange(self.classes, dtype=self._torch.int32)[:, None, None]
        return ((bits[None] >> shifts) & 1).to(self._torch.uint8)

    def __getitem__(self, i: int):
        from torchvision import tv_tensors

        image, mask = tv_tensors.Image(self.pixels.decode(i)), tv_tensors.Mask(self.mask(i))
        for op in self.joint:
            image, mask = op(image, mask)
        for op in self.image_only:
            image = op(image)
        image = image.as_subclass(self._torch.Tensor)
        if self.normalize is not None:
            image = self.normalize(image)
        return image, mask.as_subclass(self._torch.Tensor).float()
