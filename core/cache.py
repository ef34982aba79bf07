"""Cross-run stage cache: a run with the same inputs and the same code reuses a finished run.

A stage's key hashes the config sections that stage reads (its `reads` in the stage table), the key of the stage
before it (so a change upstream invalidates everything downstream) and the code
version (graftflow's version plus a hash of the `core` and `plugins` sources, so
editing a stage or a plugin invalidates the cache). When a stage completes, a
pointer `<artifact_root>/<name>/_cache/<stage>-<key>.json` names the run that
holds it. A new run whose selected stages all have pointers to one run that
still has them completed reuses that run instead of computing again
(`force: true` computes again). Nothing but pointers is stored: the run they
name is the cached result, so deleting a run simply makes its pointers misses.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from graftflow.core import storage
from graftflow.core.config import PipelineConfig
from graftflow.core.stage_table import COMMON_INPUTS, STAGES


@lru_cache(maxsize=1)
def code_version() -> str:
    """graftflow's version plus a hash of every core/ and plugins/ source file."""
    try:
        version = metadata.version("graftflow")
    except metadata.PackageNotFoundError:
        version = "unknown"
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for package in ("core", "plugins"):
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return f"{version}+{digest.hexdigest()[:12]}"


def _pick(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def stage_keys(config: PipelineConfig) -> dict[str, str]:
    """Every stage's cache key, chained in pipeline order."""
    data = config.model_dump(mode="json")
    keys, previous = {}, code_version()
    for stage in (s for s in STAGES if s.chain):
        inputs = {path: _pick(data, path) for path in (*COMMON_INPUTS, *stage.reads)}
        blob = json.dumps({"stage": stage.name, "previous": previous, "inputs": inputs}, sort_keys=True)
        keys[stage.name] = previous = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return keys


def _pointer(config: PipelineConfig, stage: str, key: str) -> str:
    return storage.join(config.artifact_root, config.name, "_cache", f"{stage}-{key}.json")


def record(config: PipelineConfig, stage: str, run_id: str) -> None:
    """Point the stage's key at the run in which it just completed."""
    key = stage_keys(config)[stage]
    storage.write_json(
        _pointer(config, stage, key), {"stage": stage, "key": key, "run_id": run_id, "code_version": code_version()}
    )


def cached_run(config: PipelineConfig, stages: list[str]) -> str | None:
    """The id of a run that completed every one of `stages` with these inputs and this code, if any."""
    from graftflow.core.runs import Run

    keys = stage_keys(config)
    run_ids = set()
    for stage in stages:
        url = _pointer(config, stage, keys[stage])
        if not storage.exists(url):
            return None
        run_ids.add(storage.read_json(url)["run_id"])
    if len(run_ids) != 1:
        return None
    run = Run(config, run_ids.pop())
    if not storage.exists(run.summary_url) or not all(run.completed(s) for s in stages):
        return None
    return run.run_id
