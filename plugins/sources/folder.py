"""Images at any fsspec URL: a folder, or a zip/tar archive of one (`file://`, `memory://`, `s3://`, `https://`).

The layout says how labels are given: class per sub-folder (`<root>/<class>/<image>`,
the default) or a CSV/Parquet label table (see `core.TableLayout`). An archive is
copied into the stage's scratch folder and safely extracted there.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import Field

from graftflow.core import (
    DataError,
    DataSource,
    ImageSourceParams,
    hookimpl,
    image_records,
    lazy_module,
    listing,
    looks_like_archive,
    safe_extract,
)

fsspec = lazy_module("fsspec")  # imported when the folder is looked at, not when the source registers

# What identifies a file's version on each filesystem: local/memory times, S3/GCS/HTTP validators.
_VERSION_KEYS = (
    "mtime",
    "created",
    "LastModified",
    "last_modified",
    "updated",
    "ETag",
    "etag",
    "Last-Modified",
    "md5Hash",
    "Content-MD5",
)


class FolderParams(ImageSourceParams):
    path: str = Field(
        description="A folder, or a .zip/.tar(.gz) archive of one: a local path (relative: from the config "
        "file's folder) or any fsspec URL.",
        json_schema_extra={"format": "path"},  # resolved from the config file's folder when relative
    )


def _params(params: dict) -> FolderParams:
    return FolderParams.model_validate(params)


def _is_archive(p: FolderParams) -> bool:
    return looks_like_archive(p.path.split("?", 1)[0])


def _check(params: dict) -> None:
    p = _params(params)
    fs, root = fsspec.core.url_to_fs(p.path)
    what = "archive" if _is_archive(p) else "folder"
    try:
        exists = fs.exists(root)
    except Exception as exc:  # an unreachable host or bucket: say which
        raise DataError(f"data.source.path: cannot reach '{p.path}': {type(exc).__name__}: {exc}") from None
    if not exists:
        raise DataError(f"data.source.path: {what} '{p.path}' does not exist")
    if what == "folder" and not fs.isdir(root):
        raise DataError(f"data.source.path: '{p.path}' is not a folder (nor a .zip/.tar archive)")


def _version(info: dict) -> str:
    return "\0".join(str(info.get(k)) for k in ("size", *_VERSION_KEYS) if info.get(k) is not None)


def _fingerprint(params: dict) -> str:
    """Names, sizes and versions (mtime, ETag...): a changed file changes the store's address."""
    p = _params(params)
    fs, root = fsspec.core.url_to_fs(p.path)
    digest = hashlib.sha256()
    if _is_archive(p):
        digest.update(f"archive\0{_version(fs.info(root))}".encode())
    else:
        for rel, info in listing(fs, root):
            digest.update(f"{rel}\0{_version(info)}\n".encode())
    return digest.hexdigest()


def _load(params: dict, workdir: Path | None):
    p = _params(params)
    fs, root = fsspec.core.url_to_fs(p.path)
    if not _is_archive(p):
        return image_records(fs, root, p, f"'{p.path}'")
    if workdir is None:
        raise DataError("data.source.path: an archive source needs a scratch folder to extract into")
    name = Path(root.split("?", 1)[0]).name
    local = workdir / "download" / name
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        fs.get_file(root, str(local))
    except Exception as exc:
        raise DataError(f"data.source.path: cannot fetch '{p.path}': {type(exc).__name__}: {exc}") from None
    data = workdir / "data"
    safe_extract(local, data, p.max_extract_bytes)
    local.unlink()
    return image_records(fsspec.filesystem("file"), str(data), p, f"archive '{name}'")


@hookimpl
def graft_data_sources():
    return [
        DataSource(
            name="folder",
            load=_load,
            fingerprint=_fingerprint,
            check=_check,
            params_model=FolderParams,
            description="images at any fsspec URL (folder or zip/tar): class folders or a label table",
        )
    ]
