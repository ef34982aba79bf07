"""Safe extraction of zip and tar archives.

Every member is checked before a single byte is written: no absolute paths,
no `..`, no drive letters, no devices or FIFOs, links only to paths inside the
archive (relative, without `..`), and the total uncompressed size (and, for
zip, each member's compression ratio) under a cap — a zip bomb is refused from
its headers, and the cap is enforced again while bytes are written, in case
the headers lie. Extraction goes into a hidden sibling folder that is renamed
into place at the end: a corrupt or hostile archive is one clear `DataError`
naming the archive and the member, and leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from graftflow.core.errors import DataError

DEFAULT_MAX_BYTES = 64 * 2**30  # 64 GiB of extracted data
MAX_RATIO = 200  # uncompressed/compressed, for zip members over RATIO_FLOOR bytes
RATIO_FLOOR = 4 * 2**20
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


@dataclass
class _Member:
    name: str  # normalised, relative, posix
    kind: str  # "file", "dir", "symlink", "hardlink"
    size: int
    link: str | None = None


def archive_kind(path: Path) -> str | None:
    """ "zip", "tar" or None, by content (not by name)."""
    if zipfile.is_zipfile(path):
        return "zip"
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except OSError:
        return None
    return None


def looks_like_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _clean_name(archive: Path, raw: str) -> str:
    """The member's relative posix path, or a DataError if it could land outside the destination."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"archive {archive.name}: member '{raw}' has an absolute path; refusing to extract")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise DataError(
            f"archive {archive.name}: member '{raw}' points outside the extraction folder (..); refusing to extract"
        )
    return "/".join(parts)


def _check_link(archive: Path, member: str, target: str) -> str:
    """Link targets must stay inside: relative (hard links: another member) and without `..`."""
    clean = target.replace("\\", "/")
    parts = [p for p in PurePosixPath(clean).parts if p not in ("", ".")]
    if clean.startswith("/") or (len(clean) > 1 and clean[1] == ":") or ".." in parts:
        raise DataError(
            f"archive {archive.name}: link '{member}' -> '{target}' escapes the extraction folder; refusing to extract"
        )
    return "/".join(parts)


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[_Member]:
    members = []
    for info in zf.infolist():
        name = _clean_name(archive, info.filename)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            target = zf.read(info).decode("utf-8", "replace")
            members.append(_Member(name, "symlink", 0, _check_link(archive, name, target)))
            continue
        if info.is_dir():
            members.append(_Member(name, "dir", 0))
            continue
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DataError(
                f"archive {archive.name}: member '{info.filename}' expands {info.compress_size} → "
                f"{info.file_size} bytes (over {MAX_RATIO}×); refusing a likely zip bomb"
            )
        members.append(_Member(name, "file", info.file_size))
    return members


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[_Member]:
    members = []
    for info in tf.getmembers():
        name = _clean_name(archive, info.name)
        if info.isdir():
            members.append(_Member(name, "dir", 0))
        elif info.isreg():
            members.append(_Member(name, "file", info.size))
        elif info.issym():
            members.append(_Member(name, "symlink", 0, _check_link(archive, name, info.linkname)))
        elif info.islnk():
            members.append(_Member(name, "hardlink", 0, _check_link(archive, name, info.linkname)))
        else:
            raise DataError(f"archive {archive.name}: member '{info.name}' is a device or FIFO; refusing to extract")
    return members


def _validate(archive: Path, members: list[_Member], max_bytes: int) -> None:
    total = sum(m.size for m in members)
    if total > max_bytes:
        raise DataError(
            f"archive {archive.name}: would extract {total} bytes, over the cap of {max_bytes} "
            f"(data.source.max_extract_bytes); refusing a likely archive bomb"
        )
    links = {m.name for m in members if m.kind in ("symlink", "hardlink")}
    names = {m.name for m in members}
    for m in members:
        # Writing through a link declared by the archive could reach anywhere the link does.
        parents = PurePosixPath(m.name).parents
        through = next((str(p) for p in parents if str(p) in links), None)
        if through is not None:
            raise DataError(
                f"archive {archive.name}: member '{m.name}' is written through link '{through}'; refusing to extract"
            )
        if m.kind == "hardlink" and m.link not in names:
            raise DataError(f"archive {archive.name}: hard link '{m.name}' -> '{m.link}' names no member")


class _Budget:
    def __init__(self, archive: Path, max_bytes: int):
        self.archive, self.left = archive, max_bytes

    def copy(self, src, dst_path: Path, member: str, declared: int) -> None:
        written = 0
        with open(dst_path, "wb") as out:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                self.left -= len(chunk)
                if written > declared or self.left < 0:
                    raise DataError(
                        f"archive {self.archive.name}: member '{member}' is larger than its header says "
                        f"or exceeds the extraction cap; refusing to extract"
                    )
                out.write(chunk)


@contextmanager
def _corrupt_is_data_error(archive: Path) -> Iterator[None]:
    try:
        yield
    except DataError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise DataError(f"archive {archive.name} is corrupt or unreadable: {exc}") from None
    except (OSError, ValueError) as exc:  # zlib errors, truncated streams, CRC mismatches
        raise DataError(f"archive {archive.name} cannot be extracted: {exc}") from None


def safe_extract(archive: Path, dest: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Extract `archive` (zip or any tar) into `dest` after checking every member; returns the file names.

    `dest` is replaced whole at the end; on any error nothing is left there.
    """
    archive = Path(archive)
    kind = archive_kind(archive)
    if kind is None:
        raise DataError(f"archive {archive.name} is corrupt or not a zip/tar archive")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        with _corrupt_is_data_error(archive):
            files = (_extract_zip if kind == "zip" else _extract_tar)(archive, staging, max_bytes)
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(staging, dest)
        return files
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _target(root: Path, name: str) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _extract_zip(archive: Path, root: Path, max_bytes: int) -> list[str]:
    budget = _Budget(archive, max_bytes)
    files = []
    with zipfile.ZipFile(archive) as zf:
        members = _zip_members(archive, zf)
        _validate(archive, members, max_bytes)
        for info, m in zip(zf.infolist(), members, strict=True):
            if m.kind == "dir":
                (root / m.name).mkdir(parents=True, exist_ok=True)
            elif m.kind == "symlink":
                continue  # zip symlinks are never needed for images; checked above, not created
            else:
                with zf.open(info) as src:  # CRC is checked when the member is read to its end
                    budget.copy(src, _target(root, m.name), m.name, m.size)
                files.append(m.name)
    return files


def _extract_tar(archive: Path, root: Path, max_bytes: int) -> list[str]:
    budget = _Budget(archive, max_bytes)
    files = []
    with tarfile.open(archive) as tf:
        infos = tf.getmembers()
        members = _tar_members(archive, tf)
        _validate(archive, members, max_bytes)
        for info, m in zip(infos, members, strict=True):
            if m.kind == "dir":
                (root / m.name).mkdir(parents=True, exist_ok=True)
            elif m.kind == "file":
                src = tf.extractfile(info)
                budget.copy(src, _target(root, m.name), m.name, m.size)
                files.append(m.name)
            elif m.kind == "hardlink":  # a copy of an earlier member: never a link on disk
                shutil.copyfile(root / m.link, _target(root, m.name))
                files.append(m.name)
            else:  # symlink: relative, without `..`, checked above
                os.symlink(m.link, _target(root, m.name))
    return files
