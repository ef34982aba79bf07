"""A run's home: `<artifact_root>/<name>/<run-id>/<stage>/...` plus `summary.json`.

summary.json is rewritten atomically after every stage, so it always
describes finished work: a stage's outputs are listed only once its directory
has been published whole.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Any

from graftflow.core import storage
from graftflow.core.config import PipelineConfig
from graftflow.core.errors import GraftError, StageError
from graftflow.core.specs import RunInfo

SUMMARY = "summary.json"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


class Run:
    def __init__(self, config: PipelineConfig, run_id: str):
        self.config = config
        self.run_id = run_id
        self.url = storage.join(config.artifact_root, config.name, run_id)
        self.summary_url = storage.join(self.url, SUMMARY)

    @classmethod
    def open(cls, config: PipelineConfig, run_id: str | None = None) -> Run:
        """Open (or create) a run; an unwritable artifact root is a one-line error, before any work."""
        run = cls(config, run_id or new_run_id())
        try:
            if not storage.exists(run.summary_url):
                storage.write_json(
                    run.summary_url,
                    {
                        "name": config.name,
                        "run_id": run.run_id,
                        "config": config.model_dump(mode="json"),
                        "stages": {},
                        "metrics": {},
                    },
                )
        except OSError as exc:
            raise GraftError(
                f"artifact_root: cannot write to '{config.artifact_root}': {exc.strerror or exc}"
            ) from None
        return run

    def info(self) -> RunInfo:
        return RunInfo(self.config.name, self.run_id, self.url, self.config.model_dump(mode="json"))

    def summary(self) -> dict[str, Any]:
        return storage.read_json(self.summary_url)

    def update(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        data = self.summary()
        change(data)
        storage.write_json(self.summary_url, data)
        return data

    def stage_url(self, stage: str) -> str:
        return storage.join(self.url, stage)

    def completed(self, stage: str) -> bool:
        return self.summary().get("stages", {}).get(stage, {}).get("status") == "completed"

    def output(self, stage: str, name: str, needed_by: str) -> str:
        """URL of an output of an earlier stage of this run; a clear error if that stage has not run."""
        entry = self.summary().get("stages", {}).get(stage, {})
        if entry.get("status") != "completed" or name not in entry.get("outputs", {}):
            raise StageError(
                f"{needed_by}: needs the '{stage}' stage of run {self.run_id}, which has not completed; "
                f"run it first (--stages {stage},{needed_by}) or pass --run-id of a run that has it"
            )
        return storage.join(self.stage_url(stage), entry["outputs"][name])
