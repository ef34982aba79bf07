"""Turn a stage's `Artifact`s into Prefect artifacts people look at in the UI."""

from __future__ import annotations

import base64
import logging
import re

from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from graftflow.core import stage_table, storage
from graftflow.core.config import PipelineConfig
from graftflow.core.hookspecs import hookimpl
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.stages.base import Artifact

log = logging.getLogger("graft.artifacts")


def _key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:100]


def publish(pipeline: str, stage_url: str, artifacts: list[Artifact]) -> None:
    for art in artifacts:
        key = _key(pipeline, art.key)
        if art.kind == "table" and art.rows is not None:
            rows = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()} for row in art.rows]
            create_table_artifact(table=rows, key=key, description=art.description)
        elif art.kind == "image" and art.path:
            fs, path = storage.filesystem(storage.join(stage_url, art.path))
            data = base64.b64encode(fs.cat_file(path)).decode()
            create_markdown_artifact(
                markdown=f"### {art.description}\n\n![{art.key}](data:image/png;base64,{data})\n\n"
                f"`{stage_url}/{art.path}`",
                key=key,
                description=art.description,
            )
        elif art.kind == "markdown" and art.markdown:
            create_markdown_artifact(markdown=art.markdown, key=key, description=art.description)


class TrainingProgress:
    """An observer that keeps a Prefect progress artifact (0–100 %) current while a stage trains.

    Registered on the stage's PluginHost like any observer plugin (core stays free of Prefect):
    it is created at 0 % when the stage starts and updated at every `graft_on_epoch_end`.
    """

    def __init__(self, pipeline: str, stage: str, total_epochs: int):
        self.stage, self.total = stage, max(total_epochs, 1)
        self.description = f"{pipeline}: {stage} epochs done"
        self.artifact_id = create_progress_artifact(
            progress=0.0, key=_key(pipeline, stage, "progress"), description=f"{self.description}: 0/{self.total}"
        )

    @classmethod
    def attach(cls, host: PluginHost, stage: str, config: PipelineConfig) -> TrainingProgress | None:
        declared = stage_table.stage(stage)
        epochs = declared.epochs(config) if declared.epochs is not None else 0
        if not epochs:
            return None
        try:
            observer = cls(config.name, stage, epochs)
        except Exception as exc:  # progress is a nicety: never fail a stage for it
            log.warning("progress artifact for %s not created: %s", stage, exc)
            return None
        host.add_observer(observer, name=f"graftflow-progress-{stage}")
        return observer

    @hookimpl
    def graft_on_epoch_end(self, run, stage, epoch, metrics):
        done = min(epoch, self.total)
        update_progress_artifact(
            self.artifact_id,
            progress=round(100.0 * done / self.total, 1),
            description=f"{self.description}: {done}/{self.total}",
        )
