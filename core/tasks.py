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
from graftflow.core.errors import ConfigError, DataError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import VAL_LOSS, Monitor, TaskSpec

DEFAULT_TASK = "classification"


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


def available_monitors(task: TaskSpec, method: Any = None) -> dict[str, Monitor]:
    """name → Monitor of what a fine-tune reports: `val_loss`, the task's metrics, the method's (`MethodSpec`)."""
    declared = (VAL_LOSS, *task.monitors, *(getattr(method, "monitors", None) or ()))
    return {m.name: m for m in declared}


def monitor_problem(task: TaskSpec, monitor: str, method: Any = None) -> str | None:
    """`finetune.monitor` must be a metric the task's validation or the method reports (one line, else None)."""
    available = available_monitors(task, method)
    if monitor in available:
        return None
    by = f"task '{task.name}'" + (f" and method '{method.name}'" if method is not None else "")
    return f"finetune.monitor: {by} do not report '{monitor}'; available: {', '.join(available)}"


def resolve_monitor(task: TaskSpec, monitor: str, method: Any = None) -> Monitor:
    """The declared `Monitor` (its mode) that `finetune.monitor` names; a ConfigError when none does."""
    found = available_monitors(task, method).get(monitor)
    if found is None:
        raise ConfigError(monitor_problem(task, monitor, method))
    return found
