"""The selected task (`task:` in the config) and what the stages ask of it.

Tasks are plugins (`graft_tasks()`, `TaskSpec`): this module only looks one up
and resolves the few settings that depend on it — the fine-tuning loss when
`finetune.loss` is not written, the store targets it can train on, and the
monitors it reports — so no stage has to name a task.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graftflow.core.config import PipelineConfig, PluginRef
from graftflow.core.errors import DataError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import TaskSpec

DEFAULT_TASK = "classification"
BASE_MONITORS = ("val_loss", "val_accuracy", "target_entropy")  # what every classifier-style run can report


def task_of(host: PluginHost, config: PipelineConfig) -> TaskSpec:
    """The task plugin `task.name` selects (an unknown name lists the registered ones)."""
    return host.tasks.get(config.task.name, "task.name")


def task_ref_of(meta: Mapping[str, Any]) -> PluginRef:
    """The task a saved model (model.json) was trained for; older models are classifiers."""
    return PluginRef.model_validate(meta.get("task") or DEFAULT_TASK)


def task_for_model(host: PluginHost, meta: Mapping[str, Any]) -> TaskSpec:
    return host.tasks.get(task_ref_of(meta).name, "model.json task")


def finetune_loss(config: PipelineConfig, task: TaskSpec) -> PluginRef:
    """`finetune.loss` as written, else the task's default loss (cross-entropy for classification)."""
    if "loss" in config.finetune.model_fields_set:
        return config.finetune.loss
    return PluginRef(name=task.default_loss)


def require_store_target(task: TaskSpec, target: str, field: str) -> None:
    """A store of `target` ("single", "multi", "mask") can train `task`, or one line saying which task can."""
    if target not in task.store_targets:
        hint = {"multi": "multilabel", "mask": "segmentation", "single": "classification"}.get(target, "")
        raise DataError(
            f"{field}: the data store holds '{target}' targets, which task '{task.name}' cannot train on"
            + (f"; set task: {hint}" if hint else "")
        )


def monitor_problem(task: TaskSpec, monitor: str) -> str | None:
    """`finetune.monitor` must be a metric the task's validation reports."""
    allowed = ("val_loss", *task.monitors, "target_entropy")
    if monitor in allowed:
        return None
    return f"finetune.monitor: task '{task.name}' does not report '{monitor}'; it reports {', '.join(allowed)}"
