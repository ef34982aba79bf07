"""Kaggle competitions and datasets through the official `kaggle` client.

    data:
      source: {kind: kaggle, competition: severstal-steel-defect-detection,
               layout: {kind: table, table: train.csv, image_column: ImageId, label_column: ClassId,
                        images: train_images, target: any, require_column: EncodedPixels}}
      source: {kind: kaggle, dataset: OWNER/SLUG}          # class folders by default

Credentials, first found wins: the Prefect Secret block named in `secret_block`
(resolved by graft's flows and handed over in memory), `KAGGLE_API_TOKEN`,
`KAGGLE_USERNAME` + `KAGGLE_KEY`, `kaggle.json` in `$KAGGLE_CONFIG_DIR` (or
~/.kaggle, ~/.config/kaggle). They are never logged or written anywhere.

Downloads are kept in `download_dir` (default ~/.cache/graftflow/kaggle): the
client skips a file whose remote Last-Modified is not newer than the local copy,
resumes a `.kaggle-partial` download with HTTP Range, and graftflow reports
which files were downloaded, resumed or left unchanged. Archives are extracted
safely (every member checked first) into the stage's scratch folder.
The fingerprint is the remote file listing (names, sizes, dates): while it is
unchanged, the content-addressed store is reused without a single download.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import Field, model_validator

from graftflow.core import (
    DataError,
    DataSource,
    ImageSourceParams,
    TransientDataError,
    archive_kind,
    hookimpl,
    image_records,
    looks_like_archive,
    lookup_secret,
    redact,
    safe_extract,
    secret_ref,
)

log = logging.getLogger("graft.data.kaggle")

PAGE_SIZE = 100
NO_CREDENTIALS = (
    "data.source: no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN), put kaggle.json "
    "in ~/.kaggle (or $KAGGLE_CONFIG_DIR), or name a Prefect Secret block in data.source.secret_block"
)


class KaggleParams(ImageSourceParams):
    competition: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$",
        description="Competition slug, e.g. severstal-steel-defect-detection.",
    )
    dataset: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[0-9]+)?$",
        description="Dataset as OWNER/SLUG (or OWNER/SLUG/VERSION).",
    )
    files: list[str] | None = Field(None, description="Only these files (names as Kaggle lists them); default all.")
    secret_block: str | None = Field(
        None, description='Name of a Prefect Secret block holding {"username", "key"} or an API token.'
    )
    download_dir: str | None = Field(
        None,
        description="Where downloads are kept between runs (default ~/.cache/graftflow/kaggle; relative: from the "
        "config file's folder).",
        json_schema_extra={"format": "path"},
    )
    force: bool = Field(False, description="Download again even when the local copy is up to date.")

    @model_validator(mode="after")
    def _one_of(self) -> KaggleParams:
        if bool(self.competition) == bool(self.dataset):
            raise ValueError("give exactly one of competition: NAME or dataset: OWNER/SLUG")
        return self

    @property
    def ref(self) -> str:
        return f"competition '{self.competition}'" if self.competition else f"dataset '{self.dataset}'"


CACHE_EXEMPT = frozenset({"secret_block", "download_dir", "force", "max_extract_bytes"})


def _params(params: dict) -> KaggleParams:
    return KaggleParams.model_validate(params)


# --- credentials ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    origin: str
    username: str | None = field(default=None, repr=False)
    key: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def secrets(self) -> list[str | None]:
        return [self.key, self.token]


def _config_dirs() -> list[Path]:
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return [Path(os.environ["KAGGLE_CONFIG_DIR"])]
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [Path.home() / ".kaggle", xdg / "kaggle"]


def _from_value(value: Any, origin: str) -> Credentials:
    """A secret's value: {"username", "key"}, {"token"}, their JSON text, or a bare API token."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text) if text.startswith("{") else text
        except ValueError:
            value = text
    if isinstance(value, dict):
        if value.get("username") and value.get("key"):
            return Credentials(origin, username=str(value["username"]), key=str(value["key"]))
        if value.get("token"):
            return Credentials(origin, token=str(value["token"]))
    elif isinstance(value, str) and value and not any(c.isspace() for c in value):
        return Credentials(origin, token=value)
    raise DataError(
        f'data.source.secret_block: {origin} must hold {{"username": ..., "key": ...}} or a Kaggle API token'
    )


def credentials(p: KaggleParams) -> Credentials:
    if p.secret_block:
        origin = f"Prefect Secret block '{p.secret_block}'"
        value = lookup_secret(secret_ref(p.secret_block))
        if value is None:
            raise DataError(
                f"data.source.secret_block: {origin} was not resolved here; graft's Prefect flows "
                f"read it (run through `graft run` or a deployment)"
            )
        return _from_value(value, origin)
    token = os.environ.get("KAGGLE_API_TOKEN")
    if token:
        path = Path(token).expanduser()
        if len(token) < 4096 and path.is_file():
            token = path.read_text().strip()
        return Credentials("KAGGLE_API_TOKEN", token=token)
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return Credentials(
            "KAGGLE_USERNAME/KAGGLE_KEY", username=os.environ["KAGGLE_USERNAME"], key=os.environ["KAGGLE_KEY"]
        )
    for directory in _config_dirs():
        config = directory / "kaggle.json"
        if config.is_file():
            try:
                data = json.loads(config.read_text())
            except ValueError:
                raise DataError(f"data.source: {config} is not valid JSON") from None
            if isinstance(data, dict) and data.get("username") and data.get("key"):
                return Credentials(str(config), username=str(data["username"]), key=str(data["key"]))
            raise DataError(f'data.source: {config} has no "username" and "key"')
    access = Path.home() / ".kaggle" / "access_token"
    if access.is_file() and access.read_text().strip():
        return Credentials(str(access), token=access.read_text().strip())
    raise DataError(NO_CREDENTIALS)


# --- the client ---------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The client prints progress and notices to stdout; keep them at debug level in our log."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    if buffer.getvalue().strip():
        log.debug("kaggle client: %s", buffer.getvalue().strip())


def _api(creds: Credentials):
    with _quiet():  # `import kaggle` authenticates from the environment and prints help when it finds nothing
        from kaggle.api.kaggle_api_extended import KaggleApi
    api = KaggleApi()
    api.config_values = {"token": creds.token} if creds.token else {"username": creds.username, "key": creds.key}
    return api


@contextlib.contextmanager
def _errors(p: KaggleParams, creds: Credentials) -> Iterator[None]:
    """HTTP and network failures as one-line DataErrors; the passing kinds as TransientDataError (retried)."""
    import requests
    import urllib3

    try:
        yield
    except requests.HTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        raise _http_error(p, creds, status, redact(str(exc), creds.secrets())) from None
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        detail = redact(f"{type(exc).__name__}: {exc}", creds.secrets())
        raise TransientDataError(
            f"data.source: Kaggle could not be reached or a transfer broke off ({detail})"
        ) from None
    except ValueError as exc:
        if "does not match expected size" in str(exc):  # the client's check of Content-Length
            raise TransientDataError(
                f"data.source: a Kaggle download was truncated ({exc}); it resumes on the next attempt"
            ) from None
        raise


def _http_error(p: KaggleParams, creds: Credentials, status: int | None, detail: str) -> DataError:
    if status == 401:
        return DataError(
            f"data.source: Kaggle rejected the credentials from {creds.origin} (HTTP 401); "
            f"check the username and key (or the API token)"
        )
    if status == 403:
        if p.competition:
            return DataError(
                f"data.source.competition: accept the competition rules at "
                f"https://www.kaggle.com/competitions/{p.competition}/rules and run again (HTTP 403)"
            )
        owner_slug = "/".join(p.dataset.split("/")[:2])
        return DataError(
            f"data.source.dataset: no access to dataset '{p.dataset}' (HTTP 403): it is private, or "
            f"its terms must be accepted at https://www.kaggle.com/datasets/{owner_slug}"
        )
    if status == 404:
        field_name = "competition" if p.competition else "dataset"
        return DataError(f"data.source.{field_name}: unknown {p.ref} on Kaggle (HTTP 404)")
    if status is not None and (status == 429 or status >= 500):
        return TransientDataError(f"data.source: Kaggle answered HTTP {status} for {p.ref} ({detail})")
    return DataError(f"data.source: Kaggle answered HTTP {status} for {p.ref}: {detail}")


def remote_files(api, p: KaggleParams, creds: Credentials) -> list[dict[str, Any]]:
    """Every file of the competition or dataset: name, size, creation date (all pages)."""
    files: list[dict[str, Any]] = []
    token, seen = None, set()
    with _errors(p, creds), _quiet():
        while True:
            if p.competition:
                response = api.competition_list_files(p.competition, page_token=token, page_size=PAGE_SIZE)
                items = response.files
            else:
                response = api.dataset_list_files(p.dataset, page_token=token, page_size=PAGE_SIZE)
                if getattr(response, "error_message", None):
                    raise DataError(f"data.source.dataset: Kaggle: {response.error_message}")
                items = response.dataset_files
            files += [{"name": f.name, "size": f.total_bytes, "date": str(f.creation_date)} for f in items]
            token = response.next_page_token
            if not token or token in seen:
                break
            seen.add(token)
    return files


def _selected(p: KaggleParams, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not files:
        raise DataError(f"data.source: {p.ref} has no files on Kaggle")
    if not p.files:
        return files
    by_name = {f["name"]: f for f in files}
    unknown = [n for n in p.files if n not in by_name]
    if unknown:
        shown = ", ".join(sorted(by_name)[:10]) + (", ..." if len(by_name) > 10 else "")
        raise DataError(f"data.source.files: '{unknown[0]}' is not a file of {p.ref}; files are {shown}")
    return [by_name[n] for n in p.files]


# --- the DataSource -----------------------------------------------------------------------


def _check(params: dict) -> None:
    p = _params(params)
    if not p.secret_block:
        credentials(p)  # fails before any stage when there are none
    for name in p.files or ():
        if name.startswith("/") or ".." in PurePosixPath(name).parts:
            raise DataError(f"data.source.files: '{name}' must be a file name as Kaggle lists it")


def _fingerprint(params: dict) -> str:
    p = _params(params)
    creds = credentials(p)
    files = _selected(p, remote_files(_api(creds), p, creds))
    ref = p.competition or p.dataset
    blob = json.dumps([ref, sorted((f["name"], f["size"], f["date"]) for f in files)])
    return hashlib.sha256(blob.encode()).hexdigest()


def download_root(p: KaggleParams) -> Path:
    if p.download_dir:
        base = Path(p.download_dir).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "graftflow" / "kaggle"
    return base / ("competitions" if p.competition else "datasets") / (p.competition or p.dataset)


def _snapshot(directory: Path) -> dict[str, tuple[int, float]]:
    if not directory.is_dir():
        return {}
    return {f.name: (f.stat().st_size, f.stat().st_mtime) for f in directory.iterdir() if f.is_file()}


def _download(call, directory: Path, wanted, label: str, report: list[dict[str, Any]]) -> Path:
    """Run one client download into `directory`; report the file as downloaded, resumed or unchanged.

    `wanted(name)` picks the client's file among those in the folder (the client names it after the blob URL).
    """
    directory.mkdir(parents=True, exist_ok=True)
    before = _snapshot(directory)
    call(path=str(directory))
    after = {n: s for n, s in _snapshot(directory).items() if wanted(n) and not n.endswith(".kaggle-partial")}
    if not after:
        raise DataError(f"data.source: Kaggle sent nothing for {label}")
    changed = [n for n in after if before.get(n) != after[n]]
    name = max(changed or after, key=lambda n: after[n][1])
    if not changed:
        status = "unchanged"
        log.info(
            "kaggle: %s is unchanged since the last download (remote Last-Modified is not newer); not downloaded again",
            name,
        )
    else:
        status = "resumed" if f"{name}.kaggle-partial" in before else "downloaded"
        log.info("kaggle: %s %s (%d bytes)", name, status, after[name][0])
    report.append({"file": label, "saved_as": name, "status": status, "bytes": after[name][0]})
    return directory / name


def _merge(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        target = dst / item.name
        if item.is_dir() and not item.is_symlink() and target.is_dir():
            _merge(item, target)
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
    src.rmdir()


def _place(path: Path, dest_dir: Path, name: str, workdir: Path, max_bytes: int) -> None:
    """An archive (by name or content) is extracted into dest_dir; any other file is copied there as `name`."""
    if looks_like_archive(path.name) or archive_kind(path) is not None:
        scratch = workdir / "extract" / path.name
        safe_extract(path, scratch, max_bytes)
        _unpack_nested(scratch, workdir, max_bytes)
        _merge(scratch, dest_dir)
    else:
        dest_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest_dir / name)


def _unpack_nested(root: Path, workdir: Path, max_bytes: int) -> None:
    """Kaggle often zips the files inside (train_images.zip, train.csv.zip): unpack them where they lie."""
    for inner in sorted(root.rglob("*")):
        if inner.is_file() and not inner.is_symlink() and looks_like_archive(inner.name):
            scratch = workdir / "extract" / f"nested-{hashlib.sha1(str(inner).encode()).hexdigest()[:8]}"
            safe_extract(inner, scratch, max_bytes)
            inner.unlink()
            _merge(scratch, inner.parent)


def _load(params: dict, workdir: Path):
    p = _params(params)
    creds = credentials(p)
    api = _api(creds)
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    downloads: list[dict[str, Any]] = []
    root = download_root(p)
    with _errors(p, creds), _quiet():
        if p.files:
            for name in p.files:
                parent = str(PurePosixPath(name).parent)
                directory = root / "files" / (parent if parent != "." else "")
                if p.competition:
                    call = partial(api.competition_download_file, p.competition, name, force=p.force, quiet=True)
                else:
                    call = partial(api.dataset_download_file, p.dataset, name, force=p.force, quiet=True)
                base = PurePosixPath(name).name
                # The client names the file after the blob URL; Kaggle may zip it (train.csv → train.csv.zip).
                path = _download(call, directory, lambda n, b=base: n in (b, b + ".zip"), name, downloads)
                _place(path, data / parent if parent != "." else data, base, workdir, p.max_extract_bytes)
        else:
            if p.competition:
                call = partial(api.competition_download_files, p.competition, force=p.force, quiet=True)
            else:
                call = partial(api.dataset_download_files, p.dataset, force=p.force, quiet=True, unzip=False)
            expected = f"{p.competition}." if p.competition else f"{p.dataset.split('/')[1]}.zip"
            archive = _download(
                call, root / "all", lambda n: n.startswith(expected), p.competition or p.dataset, downloads
            )
            _place(archive, data, archive.name, workdir, p.max_extract_bytes)
    shutil.rmtree(workdir / "extract", ignore_errors=True)
    records = image_records(_local_fs(), str(data), p, p.ref)
    records.report["source"] = p.ref
    records.report["downloads"] = downloads
    return records


def _local_fs():
    import fsspec

    return fsspec.filesystem("file")


@hookimpl
def graft_data_sources():
    return [
        DataSource(
            name="kaggle",
            load=_load,
            fingerprint=_fingerprint,
            check=_check,
            params_model=KaggleParams,
            cache_exempt=CACHE_EXEMPT,
            description="Kaggle competitions and datasets through the official kaggle client",
        )
    ]
