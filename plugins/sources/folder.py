"""Class-per-directory images at any fsspec URL: `<root>/<class>/<image>`."""

from __future__ import annotations

import hashlib
from pathlib import Path

import fsspec
from pydantic import BaseModel, ConfigDict, Field

from core import DataError, DataSource, ImageRecord, hookimpl

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class FolderParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="Root folder (local path or fsspec URL) with one sub-folder per class.")
    extensions: list[str] = Field(list(IMAGE_SUFFIXES), description="Image file suffixes to include.")


def _listing(params: dict) -> tuple[fsspec.AbstractFileSystem, str, list[tuple[str, str, dict]]]:
    fs, root = fsspec.core.url_to_fs(params["path"])
    suffixes = tuple(s.lower() for s in params["extensions"])
    files = []
    for path, info in sorted(fs.find(root, detail=True).items()):
        rel = path[len(root.rstrip("/")) + 1:] if path.startswith(root.rstrip("/")) else path
        parts = rel.split("/")
        if len(parts) >= 2 and path.lower().endswith(suffixes):
            files.append((path, parts[0], info))
    return fs, root, files


def _check(params: dict) -> None:
    fs, root = fsspec.core.url_to_fs(params["path"])
    if not fs.exists(root):
        raise DataError(f"data.source.path: folder '{params['path']}' does not exist")
    if not fs.isdir(root):
        raise DataError(f"data.source.path: '{params['path']}' is not a folder")


def _fingerprint(params: dict) -> str:
    """Names, sizes and modification times: a changed file changes the store's address."""
    _, _, files = _listing(params)
    digest = hashlib.sha256()
    for path, label, info in files:
        digest.update(f"{path}\0{label}\0{info.get('size')}\0{info.get('mtime', info.get('LastModified', ''))}\n".encode())
    return digest.hexdigest()


def _load(params: dict, workdir: Path):
    fs, root, files = _listing(params)
    if not files:
        raise DataError(f"data.source.path: no images in class sub-folders of '{params['path']}'")
    for path, label, _ in files:
        yield ImageRecord(image=fs.cat_file(path), label=label, source=fs.unstrip_protocol(path))


@hookimpl
def graft_data_sources():
    return [DataSource(name="folder", load=_load, fingerprint=_fingerprint, check=_check,
                       params_model=FolderParams, description="class-per-directory images at any fsspec URL")]
