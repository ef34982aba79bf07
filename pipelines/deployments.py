"""deploy/prefect.yaml, derived from the stage table and the demo config.

One deployment per flow (the `transfer` chain and every stage's flow), each
with the demo config as its default parameters, so the UI's Custom run form
opens on a working config. Regenerate after changing the stage table or the
demo config (a test fails until you do):

    make prefect-yaml      # python -m graftflow.pipelines.deployments > deploy/prefect.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from graftflow.core import stage_table
from graftflow.core.config import load_config

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "digits.yaml"
FLOWS_MODULE = "graftflow.pipelines.flows"
POOL = {"name": "local", "work_queue_name": "default"}

# The demo's schedules: nightly re-training, a weekly data refresh, and an example left switched off.
SCHEDULES: dict[str, list[dict[str, Any]]] = {
    "transfer": [{"cron": "0 3 * * *", "timezone": "UTC", "active": True}],
    "acquire": [{"cron": "0 2 * * 1", "timezone": "UTC", "active": True}],
    "lr-find": [{"cron": "30 1 * * 0", "timezone": "UTC", "active": False}],
    # batch scoring: every hour, the newest trained model on whatever is in predict.inputs (off until switched on)
    "predict": [{"cron": "15 * * * *", "timezone": "UTC", "active": False}],
}

HEADER = """\
# graftflow deployments for a Prefect server (docs/server.md). GENERATED from the stage table
# (graftflow/core/stage_table.py) and pipelines/configs/digits.yaml by `make prefect-yaml`; edit those.
#
#   make server     # terminal 1: a local server on 127.0.0.1:4200 (SQLite under $PREFECT_HOME)
#   make pool       # the `local` process work pool and the `gpu` global concurrency limit (1 slot)
#   make deploy     # prefect --no-prompt deploy --all --prefect-file deploy/prefect.yaml (run from the repo root)
#   make worker     # terminal 2: a worker that runs the pool's flow runs
#
# Entrypoints are module paths of the installed `graftflow`; the pull step sends the worker to the
# repository root, so relative paths in the config (artifact_root, data.cache_dir) resolve as they do
# for `graft run`. Parameters are the pydantic `PipelineConfig`: the UI's Custom run form edits every section.
"""


def _deployment(flow: str, description: str, tags: list[str], config: dict[str, Any]) -> dict[str, Any]:
    entry = {
        "name": "digits",
        "description": description,
        "entrypoint": f"{FLOWS_MODULE}:{flow.replace('-', '_')}",
        "tags": tags,
        "parameters": {"config": config},
        "work_pool": POOL,
    }
    if flow in SCHEDULES:
        entry["schedules"] = SCHEDULES[flow]
    return entry


def deployments(config: dict[str, Any]) -> list[dict[str, Any]]:
    """`transfer`, then every stage of the table: stage flows continue a run (`run_id`)."""
    chain = " → ".join(stage_table.CHAIN)
    out = [
        _deployment(
            "transfer",
            f"The demo transfer (digits 0–4 → 5–9): {chain}; a same-parameters re-run "
            "reuses the finished run unless force.",
            ["graftflow", "demo"],
            config,
        )
    ]
    for stage in stage_table.STAGES:
        tags = ["graftflow", "stage" if stage.chain else "tool", *(["gpu"] if stage.gpu else [])]
        out.append(_deployment(stage.name, stage.description, tags, config))
    return out


def render() -> str:
    config = load_config(DEMO_CONFIG).model_dump(mode="json")
    document = {
        "name": "graftflow",
        "prefect-version": "3.8.8",
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $GRAFT_ROOT }}"}}],
        "deployments": deployments(config),
    }
    return HEADER + "\n" + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=120)


if __name__ == "__main__":
    sys.stdout.write(render())
