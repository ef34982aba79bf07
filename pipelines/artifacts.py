"""Turn a stage's `Artifact`s into Prefect artifacts people look at in the UI."""

from __future__ import annotations

import base64
import re

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from core import storage
from core.stages.base import Artifact


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
                markdown=f"### {art.description}\n\n![{art.key}](data:image/png;base64,{data})\n\n`{stage_url}/{art.path}`",
                key=key, description=art.description)
        elif art.kind == "markdown" and art.markdown:
            create_markdown_artifact(markdown=art.markdown, key=key, description=art.description)
