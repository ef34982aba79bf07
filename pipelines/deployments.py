"""Deployments: deploy/prefect.yaml for the demo, and `graft deploy CONFIG` for a user's own pipeline.

deploy/prefect.yaml is derived from the stage table and the demo config.

One deployment per flow (the `transfer` chain and every stage's flow), each
with the demo config as its default parameters, so the UI's Custom run form
opens on a working config. Regenerate after changing the stage table or the
demo config (a test fails until you do):

    make prefect-yaml      # python -m graftflow.pipelines.deployments > deploy/prefect.yaml
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from graftflow.core import stage_table
from graftflow.core.config import PipelineConfig, load_config
from graftflow.core.errors import ConfigError
from graftflow.core.plugin_manager import ALLOW_VAR, DENY_VAR, ENV_VAR

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
# repository root, so a relative artifact_root resolves as it does for `graft run` there (paths to inputs
# were resolved from the config file's folder when this was generated; data.cache_dir unset: the
# worker's cache folder). Parameters are the pydantic `PipelineConfig`: the UI's Custom run form edits
# every section.
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


# --- `graft deploy CONFIG`: a user's config as a deployment, through Prefect's client API -------------


def flow_names() -> list[str]:
    """What `--flow` accepts: `transfer` and every stage's flow, as the stage table declares them."""
    return ["transfer", *(s.name for s in stage_table.STAGES)]


def _schedules(cron: str | None, interval: float | None) -> list[Any]:
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule

    if cron:
        try:
            schedule = CronSchedule(cron=cron, timezone="UTC")
        except ValueError as exc:
            raise ConfigError(f"--cron: '{cron}' is not a cron expression: {exc.errors()[0]['msg']}") from None
    elif interval:
        schedule = IntervalSchedule(interval=timedelta(seconds=interval))
    else:
        return []
    return [DeploymentScheduleCreate(schedule=schedule, active=True)]


def _job_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What the worker's flow-run process needs to load the same plugins (never a credential)."""
    env = {"PREFECT_LOGGING_EXTRA_LOGGERS": "graft"}
    env.update({k: environ[k] for k in (ENV_VAR, ALLOW_VAR, DENY_VAR) if environ.get(k)})
    return env


def deployment_spec(
    config: PipelineConfig,
    flow: str,
    *,
    name: str | None = None,
    cron: str | None = None,
    interval: float | None = None,
    pool: str = POOL["name"],
    workdir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Everything the deployment of `config` to `flow` consists of, as Prefect's create_deployment takes it."""
    from prefect.utilities.callables import parameter_schema

    from graftflow.pipelines import flows

    if flow not in flow_names():
        raise ConfigError(f"--flow: unknown flow '{flow}'; flows are {', '.join(flow_names())}")
    python_name = flow.replace("-", "_")
    flow_obj = getattr(flows, python_name)
    described = "the transfer chain: " + " → ".join(stage_table.CHAIN) if flow == "transfer" else flow_obj.description
    return {
        "flow_name": flow_obj.name,
        "name": name or config.name,
        "entrypoint": f"{FLOWS_MODULE}:{python_name}",
        "parameters": {"config": config.model_dump(mode="json")},
        "parameter_openapi_schema": parameter_schema(flow_obj).model_dump_for_openapi(),
        "description": f"{config.name}: {described} (graft deploy)",
        "tags": ["graftflow", f"pipeline:{config.name}"],
        "work_pool_name": pool,
        "job_variables": {"env": _job_env(os.environ if environ is None else environ)},
        # like `prefect deploy` from a checkout: the worker runs where this was deployed from, so relative
        # paths in the config (artifact_root, data.cache_dir, plugins) resolve as they do for `graft run`
        "pull_steps": [
            {"prefect.deployments.steps.set_working_directory": {"directory": str((workdir or Path.cwd()).resolve())}}
        ],
        "schedules": _schedules(cron, interval),
        "enforce_parameter_schema": True,
        "paused": False,
    }


def _comparable(spec: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("entrypoint", "parameters", "parameter_openapi_schema", "description", "work_pool_name")
    out = {k: spec[k] for k in keys}
    out["tags"] = sorted(spec["tags"])
    out["job_variables"] = spec["job_variables"] or {}
    out["pull_steps"] = spec["pull_steps"] or []
    out["schedules"] = sorted(
        json.dumps({"schedule": s.schedule.model_dump(mode="json"), "active": s.active}, sort_keys=True)
        for s in spec["schedules"]
    )
    out["paused"] = bool(spec["paused"])
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def _existing(deployment) -> dict[str, Any]:
    return _comparable(
        {
            "entrypoint": deployment.entrypoint,
            "parameters": deployment.parameters,
            "parameter_openapi_schema": deployment.parameter_openapi_schema,
            "description": deployment.description,
            "work_pool_name": deployment.work_pool_name,
            "tags": deployment.tags,
            "job_variables": deployment.job_variables,
            "pull_steps": deployment.pull_steps,
            "schedules": deployment.schedules,
            "paused": deployment.paused,
        }
    )


def apply(spec: Mapping[str, Any]) -> tuple[str, str]:
    """Create or update the deployment; (id, "created" | "updated" | "unchanged").

    Prefect's create_deployment is an upsert that also deletes the deployment's scheduled runs and
    schedules and makes them again, so an identical deployment is left alone: deploying twice
    changes nothing.
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(spec["work_pool_name"])
        except ObjectNotFound:
            raise ConfigError(
                f"--pool: there is no work pool '{spec['work_pool_name']}' on {client.api_url}; create it: "
                f"prefect work-pool create {spec['work_pool_name']} --type process"
            ) from None
        try:
            current = client.read_deployment_by_name(f"{spec['flow_name']}/{spec['name']}")
        except ObjectNotFound:
            current = None
        if current is not None and _existing(current) == _comparable(spec):
            return str(current.id), "unchanged"
        flow_id = client.create_flow_from_name(spec["flow_name"])
        fields = {k: v for k, v in spec.items() if k != "flow_name"}
        deployment_id = client.create_deployment(flow_id=flow_id, **fields)
    return str(deployment_id), "created" if current is None else "updated"


def listing() -> list[dict[str, Any]]:
    """graftflow's deployments on the server: flow/name, pool, schedules, the pipeline of their config."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows()}
        rows = []
        for d in client.read_deployments():
            if not (d.entrypoint or "").startswith(f"{FLOWS_MODULE}:"):
                continue
            rows.append(
                {
                    "deployment": f"{flows.get(d.flow_id, '?')}/{d.name}",
                    "pipeline": ((d.parameters or {}).get("config") or {}).get("name", ""),
                    "pool": d.work_pool_name or "",
                    "schedules": [_describe(s) for s in d.schedules],
                    "updated": d.updated.isoformat(timespec="seconds") if d.updated else "",
                    "id": str(d.id),
                }
            )
    return sorted(rows, key=lambda r: r["deployment"])


def _describe(schedule) -> str:
    s = schedule.schedule
    what = f"cron {s.cron} {s.timezone or 'UTC'}" if hasattr(s, "cron") else f"every {s.interval.total_seconds():g}s"
    return what if schedule.active else f"{what} (inactive)"


if __name__ == "__main__":
    sys.stdout.write(render())
