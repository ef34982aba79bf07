"""Prefect flows: one per stage, and `transfer`, which chains them.

Thin on purpose: each flow validates its parameters against the registered
plugins and hands the work to `graftflow.core.stages` in one coarse task. Stages pass
paths (through the run's summary.json), never models or tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency

from graftflow.core import cache, secrets, stage_table, storage
from graftflow.core.config import PipelineConfig, head_only_epochs
from graftflow.core.errors import DataError, GraftError, TransientDataError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stage_table import Stage
from graftflow.core.stages.base import device_policy, execute_stage
from graftflow.core.validation import validate_config
from graftflow.pipelines.artifacts import TrainingProgress, publish
from graftflow.pipelines.secret_blocks import secret_value
from graftflow.pipelines.storage_credentials import storage_credentials


class _UserErrorsWithoutTraceback(logging.Filter):
    """A GraftError is a user mistake explained in one line: Prefect logs it without the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], GraftError):
            record.exc_info, record.exc_text = None, None
        return True


for _logger in ("prefect.task_runs", "prefect.flow_runs"):
    logging.getLogger(_logger).addFilter(_UserErrorsWithoutTraceback())
if logging.getLogger("graft").level == logging.NOTSET:  # core's notices (cache hits, skipped downloads) are INFO
    logging.getLogger("graft").setLevel(logging.INFO)


@contextmanager
def _source_secrets(stage: str, config: PipelineConfig) -> Iterator[None]:
    """Resolve the Prefect Secret blocks a source names (`secret_block`) and hand their values to the
    stage in memory, for its duration only: never into the config, summary.json, parameters or logs."""
    sources = [config.data.source, getattr(config.pretrain, "source", None)]
    names = sorted({s.params.get("secret_block") for s in sources if s is not None} - {None, ""})
    if stage != "acquire" or not names:
        yield
        return
    with ExitStack() as stack:
        for name in names:
            value = secret_value(name, "data.source.secret_block", "...", DataError)
            stack.enter_context(secrets.supplied(secrets.secret_ref(name), value))
        yield


def _transient(task, task_run, state) -> bool:
    """Retry the acquire stage only for failures that may pass (HTTP 5xx, a dropped connection)."""
    exc = getattr(state, "data", None)
    if not isinstance(exc, BaseException):
        try:
            state.result()
        except BaseException as raised:
            exc = raised
    return isinstance(exc, TransientDataError)


def _gpu_slot(stage: str, config: PipelineConfig, host: PluginHost):
    """The global concurrency slot a GPU stage holds, so runs queue instead of fighting for GPU memory.

    Without a server (or without the limit) Prefect lets the stage through at once.
    """
    hold = config.gpu_slot.hold
    if not stage_table.stage(stage).gpu or hold == "never":
        return nullcontext()
    if hold == "auto" and device_policy(config, host).device_type != "cuda":
        return nullcontext()
    get_run_logger().info("%s: taking a slot of global concurrency limit '%s'", stage, config.gpu_slot.name)
    return concurrency(config.gpu_slot.name, occupy=1)


@task(name="run-stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(stage: str, config: PipelineConfig, run_id: str) -> dict[str, Any]:
    host = PluginHost(config.plugins)
    run = Run.open(config, run_id)
    TrainingProgress.attach(host, stage, config)  # a progress artifact, updated at every epoch end
    with _source_secrets(stage, config), _gpu_slot(stage, config, host):
        result = execute_stage(stage, config, run, host)
    publish(config.name, result["url"], result.pop("artifacts"))
    get_run_logger().info("%s %s in %.1fs → %s", stage, result["status"], result["seconds"], result["url"])
    return result


def _run_stage_flow(stage: Stage, config: PipelineConfig, run_id: str | None) -> dict[str, Any]:
    """What every stage's flow does: check the config, run the stages it prepares on, then the stage in one task."""
    with storage_credentials(config):
        validate_config(config, PluginHost(config.plugins), [*stage.prepare, stage.name])
        return _prepared_stage(stage, config, run_id)


def _prepared_stage(stage: Stage, config: PipelineConfig, run_id: str | None) -> dict[str, Any]:
    """The stages this one needs, where the run lacks them, then the stage itself in one task."""
    run = Run.open(config, run_id)
    for name in stage.prepare:
        if not run.completed(name):
            STAGE_FLOWS[name](config=config, run_id=run.run_id)
    runner = run_stage
    if stage.retry_transient and config.data.retries:  # downloads: retried with exponential back-off
        runner = run_stage.with_options(
            retries=config.data.retries,
            retry_condition_fn=_transient,
            retry_delay_seconds=[config.data.retry_delay * 2**i for i in range(config.data.retries)],
        )
    return runner(stage.name, config, run.run_id)


def _name(stage: str):
    def name() -> str:
        from prefect.runtime import flow_run

        params = flow_run.parameters
        config = params.get("config")
        pipeline = getattr(config, "name", None) or (config or {}).get("name", "transfer")
        return f"{pipeline}/{stage}/{params.get('run_id') or 'new'}"

    return name


def _stage_flow(stage: Stage):
    """The Prefect flow of one stage: `config` (the UI's parameter form) and the `run_id` it continues."""

    def run(config: PipelineConfig = PipelineConfig(), run_id: str | None = None) -> dict[str, Any]:  # noqa: B008
        return _run_stage_flow(stage, config, run_id)

    run.__name__ = run.__qualname__ = stage.python_name
    run.__doc__ = stage.description
    return flow(name=stage.name, flow_run_name=_name(stage.name), description=stage.description)(run)


# One flow per stage, named as the stage; importable as `graftflow.pipelines.flows:<name>` (deployments).
STAGE_FLOWS = {s.name: _stage_flow(s) for s in stage_table.STAGES}
globals().update({s.python_name: STAGE_FLOWS[s.name] for s in stage_table.STAGES})


def _transfer_name() -> str:
    """Says what ran: pipeline, stages, model and the fine-tuning budget, e.g.
    `digits-transfer · all stages · resnet-tiny · ft 1+5 ep · lr 0.0003–0.003`."""
    from prefect.runtime import flow_run

    params = flow_run.parameters
    config = params.get("config")
    if isinstance(config, dict):
        try:
            config = PipelineConfig.model_validate(config)
        except Exception:  # the run fails on validation anyway; still give it a name
            return f"{config.get('name', 'transfer')} · invalid parameters"
    config = config or PipelineConfig()
    stages = params.get("stages")
    ft = config.finetune
    lr = "–".join(f"{v:g}" for v in ft.lr) if isinstance(ft.lr, list) else f"{ft.lr:g}"
    parts = [
        config.name,
        "+".join(stages) if stages else "all stages",
        f"{config.model.family}-{config.model.variant}",
        f"ft {head_only_epochs(config, config.pretrain.enabled)}+{ft.epochs} ep",
        f"lr {lr}",
    ]
    if params.get("run_id"):
        parts.append(f"run {params['run_id']}")
    if params.get("force"):
        parts.append("force")
    return " · ".join(parts)


@flow(name="transfer", flow_run_name=_transfer_name)
def transfer(
    config: PipelineConfig = PipelineConfig(),  # noqa: B008 (the UI form shows these defaults)
    stages: list[str] | None = None,
    run_id: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """The whole transfer pipeline: acquire → augment → pretrain → finetune → evaluate → export.

    Continuing a run (`run_id`) skips the stages it already completed, unless `force`;
    an interrupted stage resumes from its last checkpoint. Without `run_id`, a run
    that already completed the selected stages with the same inputs and code
    is reused (see core/cache.py), unless `force`.
    """
    selected = [s for s in stage_table.CHAIN if stages is None or s in stages]
    with storage_credentials(config):
        validate_config(config, PluginHost(config.plugins), selected)
        return _chain(config, selected, run_id, force)


def _chain(config: PipelineConfig, selected: list[str], run_id: str | None, force: bool) -> dict[str, Any]:
    """The selected stages in order, each its own flow; those the run completed are skipped."""
    logger = get_run_logger()
    reused = None
    if run_id is None and not force:
        reused = run_id = cache.cached_run(config, selected)
        if reused:
            logger.info(
                "cache hit: run %s completed %s with the same inputs and code; reusing it (force: true computes again)",
                reused,
                ", ".join(selected),
            )
    run = Run.open(config, run_id)
    logger.info("run %s → %s", run.run_id, run.url)
    # Pointers are recorded only when every stage of this run ran with this very config.
    same_config = run.summary().get("config") == config.model_dump(mode="json")
    skipped = []
    for stage in selected:
        if not force and run.completed(stage):
            logger.info("%s: already completed in run %s, skipped (force: true runs it again)", stage, run.run_id)
            skipped.append(stage)
            continue
        STAGE_FLOWS[stage](config=config, run_id=run.run_id)
        if same_config:
            cache.record(config, stage, run.run_id)
    return {
        "run_id": run.run_id,
        "url": run.url,
        "summary": storage.join(run.url, "summary.json"),
        "skipped": skipped,
        "reused_run": reused,
    }
