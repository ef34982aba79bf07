"""Prefect flows: one per stage, and `transfer`, which chains them.

Thin on purpose: each flow validates its parameters against the registered
plugins and hands the work to `core.stages` in one coarse task. Stages pass
paths (through the run's summary.json), never models or tensors.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from core import storage
from core.config import STAGES, PipelineConfig
from core.plugin_manager import PluginHost
from core.runs import Run
from core.stages.base import execute_stage
from core.validation import validate_config
from pipelines.artifacts import publish


@task(name="run-stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def run_stage(stage: str, config: PipelineConfig, run_id: str) -> dict[str, Any]:
    host = PluginHost(config.plugins)
    run = Run.open(config, run_id)
    result = execute_stage(stage, config, run, host)
    publish(config.name, result["url"], result.pop("artifacts"))
    get_run_logger().info("%s %s in %.1fs → %s", stage, result["status"], result["seconds"], result["url"])
    return result


def _stage_flow(stage: str, config: PipelineConfig, run_id: str | None) -> dict[str, Any]:
    validate_config(config, PluginHost(config.plugins), [stage])
    run = Run.open(config, run_id)
    return run_stage(stage, config, run.run_id)


def _name(stage: str):
    def name() -> str:
        from prefect.runtime import flow_run

        params = flow_run.parameters
        config = params.get("config")
        pipeline = getattr(config, "name", None) or (config or {}).get("name", "transfer")
        return f"{pipeline}/{stage}/{params.get('run_id') or 'new'}"
    return name


@flow(name="acquire", flow_run_name=_name("acquire"))
def acquire(config: PipelineConfig = PipelineConfig(), run_id: str | None = None) -> dict[str, Any]:
    """Fetch the data source and normalise it into the content-addressed Arrow store."""
    return _stage_flow("acquire", config, run_id)


@flow(name="augment", flow_run_name=_name("augment"))
def augment(config: PipelineConfig = PipelineConfig(), run_id: str | None = None) -> dict[str, Any]:
    """Validate the augmentation policy and write a preview grid."""
    return _stage_flow("augment", config, run_id)


@flow(name="pretrain", flow_run_name=_name("pretrain"))
def pretrain(config: PipelineConfig = PipelineConfig(), run_id: str | None = None) -> dict[str, Any]:
    """Pretrain the backbone with the configured pretext task."""
    return _stage_flow("pretrain", config, run_id)


@flow(name="finetune", flow_run_name=_name("finetune"))
def finetune(config: PipelineConfig = PipelineConfig(), run_id: str | None = None) -> dict[str, Any]:
    """Fine-tune: head first with the body frozen, then all layer groups with their own LRs."""
    return _stage_flow("finetune", config, run_id)


@flow(name="evaluate", flow_run_name=_name("evaluate"))
def evaluate(config: PipelineConfig = PipelineConfig(), run_id: str | None = None) -> dict[str, Any]:
    """Evaluate the fine-tuned model on held-out images."""
    return _stage_flow("evaluate", config, run_id)


@flow(name="export", flow_run_name=_name("export"))
def export(config: PipelineConfig = PipelineConfig(), run_id: str | None = None) -> dict[str, Any]:
    """Export the model and verify each format against eager."""
    return _stage_flow("export", config, run_id)


STAGE_FLOWS = {"acquire": acquire, "augment": augment, "pretrain": pretrain, "finetune": finetune,
               "evaluate": evaluate, "export": export}


def _transfer_name() -> str:
    from prefect.runtime import flow_run

    config = flow_run.parameters.get("config")
    name = getattr(config, "name", None) or (config or {}).get("name", "transfer")
    stages = flow_run.parameters.get("stages")
    return f"{name}/{'+'.join(stages) if stages else 'all-stages'}"


@flow(name="transfer", flow_run_name=_transfer_name)
def transfer(config: PipelineConfig = PipelineConfig(), stages: list[str] | None = None,
             run_id: str | None = None) -> dict[str, Any]:
    """The whole transfer pipeline: acquire → augment → pretrain → finetune → evaluate → export."""
    selected = [s for s in STAGES if stages is None or s in stages]
    validate_config(config, PluginHost(config.plugins), selected)
    run = Run.open(config, run_id)
    get_run_logger().info("run %s → %s", run.run_id, run.url)
    for stage in selected:
        STAGE_FLOWS[stage](config=config, run_id=run.run_id)
    return {"run_id": run.run_id, "url": run.url, "summary": storage.join(run.url, "summary.json")}
