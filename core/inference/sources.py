"""The images a prediction reads: files, folders, globs, fsspec URLs, zip/tar archives, a run's own split.

`open_inputs` expands what the user named into `ImageInput`s in a stable order
(natural sort within a folder). Archives are unpacked with the project's safe
extraction into a temporary folder that lives as long as the context. Nothing is
decoded here: an image that cannot be read is the predictor's to skip and report.
A name that matches nothing is one error naming it, before any image is read.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from fsspec.implementations.local import LocalFileSystem

from graftflow.core import storage
from graftflow.core.data.archives import looks_like_archive, safe_extract
from graftflow.core.data.layouts import IMAGE_SUFFIXES
from graftflow.core.data.store import natural_key, read_info, read_table
from graftflow.core.errors import ConfigError, DataError

GLOB_CHARS = "*?["


@dataclass(frozen=True)
class ImageInput:
    """One image to predict: a name for the output, how to read its encoded bytes, its label when known."""

    name: str
    read: Callable[[], bytes]
    label: str | None = None


@contextmanager
def open_inputs(inputs: Sequence[str], field: str = "INPUT") -> Iterator[list[ImageInput]]:
    """Every image `inputs` name, in order; archives stay extracted until the context ends."""
    with ExitStack() as stack:
        images: list[ImageInput] = []
        for i, text in enumerate(inputs):
            where = f"{field}[{i}]" if len(inputs) > 1 else field
            images += _expand(text, where, stack)
        yield images


def _expand(text: str, field: str, stack: ExitStack) -> list[ImageInput]:
    fs, path = storage.filesystem(text)
    if any(c in path for c in GLOB_CHARS):
        matches = sorted(fs.glob(path), key=natural_key)
        if not matches:
            raise ConfigError(f"{field}: '{text}' matches no file")
        return [img for match in matches for img in _entry(fs, match, text, field, stack)]
    if not fs.exists(path):
        raise ConfigError(f"{field}: '{text}' does not exist")
    return _entry(fs, path, text, field, stack)


def _entry(fs, path: str, text: str, field: str, stack: ExitStack) -> list[ImageInput]:
    if fs.isdir(path):
        files = sorted((p for p in fs.find(path) if _is_image_name(p) or looks_like_archive(p)), key=natural_key)
        return [img for f in files for img in _file(fs, f, field, stack)]
    return _file(fs, path, field, stack)


def _file(fs, path: str, field: str, stack: ExitStack) -> list[ImageInput]:
    name = _display(fs, path)
    if looks_like_archive(path):
        local = storage.local_copy(fs.unstrip_protocol(path)) if not storage.is_local(name) else Path(path)
        dest = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="graft-predict-"))) / "x"
        try:
            members = safe_extract(local, dest)
        except DataError as exc:
            raise DataError(f"{field}: {exc}") from None
        members = sorted((m for m in members if _is_image_name(m)), key=natural_key)
        return [ImageInput(f"{name}!{m}", _reader_local(dest / m)) for m in members]
    if isinstance(fs, LocalFileSystem):
        return [ImageInput(name, Path(path).read_bytes)]
    return [ImageInput(name, lambda fs=fs, path=path: fs.cat_file(path))]


def _reader_local(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


def _is_image_name(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def _display(fs, path: str) -> str:
    """The path as the user would write it: a URL keeps its protocol, a local path stays a path."""
    url = fs.unstrip_protocol(path)
    return url.removeprefix("file://")


def split_inputs(store_url: str, split: str, class_names: Sequence[str], field: str = "--split") -> list[ImageInput]:
    """The rows of `split` in a run's store whose class the model knows, in store order, with their labels.

    The same rows, in the same order, that `evaluate` scores for that split.
    """
    info = read_info(store_url)
    unknown = [c for c in class_names if c not in info.class_names]
    if unknown:
        raise ConfigError(f"{field}: the model's class '{unknown[0]}' is not in the run's data store")
    table = read_table(store_url)
    ids = [info.class_names.index(c) for c in class_names]
    rows = table.filter(pc.and_(pc.equal(table["split"], split), pc.is_in(table["label"], pa.array(ids, pa.int32()))))
    if rows.num_rows == 0:
        raise ConfigError(f"{field}: the {split} split of the run's store has no image of the model's classes")
    images, labels, sources = rows["image"], rows["label"].to_pylist(), rows["source"].to_pylist()
    return [
        ImageInput(str(sources[i]), lambda i=i: images[i].as_py(), info.class_names[labels[i]])
        for i in range(rows.num_rows)
    ]


@contextmanager
def prediction_inputs(
    inputs: Sequence[str], split: str | None, run_url: str | None, class_names: Sequence[str], field: str = "INPUT"
) -> Iterator[list[ImageInput]]:
    """The named images, then the rows of `split` of the model's own run (`--split test`)."""
    split_field = "--split" if field == "INPUT" else field.rsplit(".", 1)[0] + ".split"
    if not inputs and split is None:
        raise ConfigError(f"{field}: name images to predict (files, folders, globs, URLs, archives) or a split")
    store = None
    if split is not None:
        if run_url is None:
            raise ConfigError(f"{split_field}: the model is not inside a run folder, so it has no data store to read")
        store = run_store(run_url, split_field)
    with open_inputs(inputs, field) as images:
        yield images + (split_inputs(store, split, class_names, split_field) if store else [])


def run_store(run_url: str, field: str) -> str:
    """The data store a run acquired (its acquire stage's dataset.json)."""
    summary = storage.read_json(storage.join(run_url, "summary.json"))
    entry = summary.get("stages", {}).get("acquire", {})
    if entry.get("status") != "completed" or "dataset" not in entry.get("outputs", {}):
        raise ConfigError(f"{field}: run {run_url} has no completed acquire stage (no data store)")
    return storage.read_json(storage.join(run_url, "acquire", entry["outputs"]["dataset"]))["path"]
