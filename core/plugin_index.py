"""The plugin listing, saved with a fingerprint of everything it was made from.

Listing the plugins means importing them, and the built-ins import torch, timm and
torchvision: ~2–4 s before `graft plugins` can print a line. The listing itself is
plain data (kinds, names, origins, versions, variants, parameters), so it is kept
in `$XDG_CACHE_HOME/graftflow/plugin-index/<fingerprint>.json` and reused while the
fingerprint holds. The fingerprint covers what discovery reads: the interpreter and
`sys.path`, every `graft.plugins` entry point with its distribution's version, the
plugins named by `--plugin` / `GRAFT_PLUGINS` and the allow/deny lists, and the size
and modification time of every Python file of the packages those plugins live in
(and of graftflow's core, whose helpers the built-ins use). Editing, adding or
removing a plugin gives a new fingerprint, hence a fresh discovery.
`GRAFT_PLUGIN_INDEX=0` always discovers afresh.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from graftflow.core.plugin_manager import ALLOW_VAR, DENY_VAR, ENV_VAR, _entry_points

SWITCH = "GRAFT_PLUGIN_INDEX"


def index_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "graftflow" / "plugin-index"


def lookup(refs: Iterable[str], env: Mapping[str, str] | None = None) -> Any:
    """The saved listing for these plugins as they are now, or None (none saved, or a plugin changed)."""
    env = os.environ if env is None else env
    if env.get(SWITCH, "1") == "0":
        return None
    try:
        return json.loads((index_dir(env) / f"{fingerprint(list(refs), env)}.json").read_text())
    except (OSError, ValueError):
        return None


def cached(refs: Iterable[str], build: Callable[[], Any], env: Mapping[str, str] | None = None) -> Any:
    """What `build()` returns (JSON-able), from the index when its fingerprint matches, else built and saved."""
    env = os.environ if env is None else env
    if env.get(SWITCH, "1") == "0":
        return build()
    key = fingerprint(list(refs), env)
    path = index_dir(env) / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        pass
    data = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(json.dumps(data, default=str))
        os.replace(partial, path)  # whole or not at all: a reader never sees half a listing
    except OSError:  # a read-only home: the listing is still right, only not saved
        pass
    return data


def fingerprint(refs: list[str], env: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for part in (sys.executable, sys.version, *sys.path, *refs):
        h.update(f"{part}\0".encode())
    for var in (ENV_VAR, ALLOW_VAR, DENY_VAR):
        h.update(f"{var}={env.get(var, '')}\0".encode())
    modules = [ep.value for ep, _, _ in _entry_points(tuple(sys.path))]
    for ep, dist, version in _entry_points(tuple(sys.path)):
        h.update(f"{ep.name}={ep.value}@{dist}=={version}\0".encode())
    named = [*refs, *filter(None, (s.strip() for s in env.get(ENV_VAR, "").split(",")))]
    for path in sorted(_source_files([*modules, *named, "graftflow.core"])):
        try:
            stat = path.stat()
        except OSError:
            continue
        h.update(f"{path}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return h.hexdigest()[:32]


def _source_files(refs: list[str]) -> set[Path]:
    """The Python files a plugin's code may come from: its file, or every file of its top-level package's
    folder (a `graftflow.plugins.x` module: the whole `graftflow.plugins` tree)."""
    files: set[Path] = set()
    roots: set[Path] = set()
    for ref in refs:
        if ref.endswith(".py") or os.sep in ref:
            files.add(Path(ref).expanduser().resolve())
            continue
        root = _package_root(ref.split(":")[0])
        if root is not None:
            roots.add(root)
    for root in roots:
        files.update(root.rglob("*.py") if root.is_dir() else [root])
    return files


def _package_root(module: str) -> Path | None:
    """The folder of the module's package two levels up at most (`graftflow.plugins`, `acme_plugin`)."""
    parts = module.split(".")
    top = ".".join(parts[:2]) if parts[0] == "graftflow" else parts[0]
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin) if spec.origin else None
