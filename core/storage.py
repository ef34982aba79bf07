"""fsspec paths and atomic writes.

Every location in graftflow is an fsspec URL. Training code needs local files
(torch, onnx and safetensors write to paths), so a stage writes into a local
staging directory and `publish_dir` moves it into place in one step: a crash
never leaves a half-written stage where the next run would trust it.

Object stores (s3:// through s3fs) have no rename: there a folder is uploaded
file by file, its completion markers (a store's `_SUCCESS`, a checkpoint's
`COMPLETE`) last, and a stage folder is trusted only once summary.json lists
it. Credentials never pass through here: s3fs takes them from the environment
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, an instance role) and
the endpoint from AWS_ENDPOINT_URL_S3 (MinIO, a local S3), so no URL, config or
log line ever holds one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

# fsspec takes ~0.1 s to import; a command that answers a config mistake never touches a file through it.
from graftflow.core.lazy import lazy_module

fsspec = lazy_module("fsspec")
_local = lazy_module("fsspec.implementations.local")


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url)
    return fs, path


def is_local(url: str) -> bool:
    return isinstance(filesystem(url)[0], _local.LocalFileSystem)


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


# Files that say "this folder is whole" (the data store's and a checkpoint's); uploaded after the rest.
COMPLETION_MARKERS = frozenset({"_SUCCESS", "COMPLETE"})


def write_json(url: str, data: Any) -> None:
    """Write JSON atomically: a temp sibling then a rename locally; one PUT (atomic per object) elsewhere."""
    text = json.dumps(data, indent=2, sort_keys=False, default=str)
    fs, path = filesystem(url)
    if not isinstance(fs, _local.LocalFileSystem):
        fs.pipe_file(path, text.encode("utf-8"))
        return
    fs.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def read_json(url: str) -> Any:
    fs, path = filesystem(url)
    with fs.open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def exists(url: str) -> bool:
    fs, path = filesystem(url)
    return fs.exists(path)


def local_staging_dir(final_url: str) -> Path:
    """A fresh local directory to write a stage into, next to its destination when local."""
    fs, path = filesystem(final_url)
    if isinstance(fs, _local.LocalFileSystem):
        parent = Path(path).parent
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{Path(path).name}.partial-", dir=parent))
    return Path(tempfile.mkdtemp(prefix="graft-stage-"))


def publish_dir(local: Path, final_url: str) -> None:
    """Replace `final_url` with the finished local directory in one step."""
    fs, path = filesystem(final_url)
    if isinstance(fs, _local.LocalFileSystem):
        if os.path.exists(path):
            trash = f"{path}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, trash)
            os.replace(local, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(local, path)
        return
    if fs.exists(path):
        fs.rm(path, recursive=True)
    files = sorted(p for p in local.rglob("*") if p.is_file())
    for batch in (
        [f for f in files if f.name not in COMPLETION_MARKERS],
        [f for f in files if f.name in COMPLETION_MARKERS],
    ):
        if batch:
            fs.put([str(f) for f in batch], [f"{path}/{f.relative_to(local).as_posix()}" for f in batch])
    fs.invalidate_cache(path)
    shutil.rmtree(local, ignore_errors=True)


def discard_dir(local: Path) -> None:
    shutil.rmtree(local, ignore_errors=True)


def local_copy(url: str) -> Path:
    """A local path to read `url` (a file or directory) with libraries that need one."""
    fs, path = filesystem(url)
    if isinstance(fs, _local.LocalFileSystem):
        return Path(path)
    dest = Path(tempfile.mkdtemp(prefix="graft-read-")) / Path(path).name
    fs.get(path, str(dest), recursive=fs.isdir(path))
    return dest
