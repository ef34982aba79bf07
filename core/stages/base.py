"""What every stage gets and gives back, and the one place stages are run.

A stage is a plain function `run(ctx) → StageResult`. It writes only into
`ctx.out`, a local staging directory that is published as
`<run>/<stage>/` when the stage succeeds and thrown away when it fails.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graftflow.core import stage_table, storage
from graftflow.core.config import PipelineConfig
from graftflow.core.device import DevicePolicy, Hardware, apply_backend_settings, resolve_policy
from graftflow.core.distributed import DistInfo, launch, wrap, wrap_step
from graftflow.core.errors import StageError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.pretrained_weights import auto_inputs
from graftflow.core.runs import Run, deep_merge

log = logging.getLogger("graft.stage")


@dataclass
class Artifact:
    """Something worth showing a person; pipelines turn these into Prefect artifacts."""

    kind: str  # "table", "image", "markdown"
    key: str
    description: str
    rows: list[dict[str, Any]] | None = None  # table
    path: str | None = None  # image: relative to the stage dir
    markdown: str | None = None


@dataclass
class StageResult:
    outputs: dict[str, str] = field(default_factory=dict)  # name → path relative to the stage dir
    summary: dict[str, Any] = field(default_factory=dict)  # merged into summary.json
    artifacts: list[Artifact] = field(default_factory=list)
    status: str = "completed"  # or "skipped"


@dataclass
class StageContext:
    stage: str
    config: PipelineConfig
    host: PluginHost
    run: Run
    policy: DevicePolicy
    out: Path
    dist: DistInfo | None = None  # set in each process of a distributed stage

    def input(self, stage: str, name: str) -> Path:
        """A local path to an output of an earlier stage of this run."""
        return storage.local_copy(self.run.output(stage, name, needed_by=self.stage))

    def epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        if self.dist is None or self.dist.is_main:
            self.host.epoch_ended(self.run.info(), self.stage, epoch, metrics)

    def checkpoint_written(self, path: str, step: int) -> None:
        if self.dist is None or self.dist.is_main:
            self.host.checkpoint_written(self.run.info(), self.stage, path, step)

    def parallel(self, model):
        """The model to train through: DDP-wrapped in a distributed stage, else itself."""
        return model if self.dist is None else wrap(model, self.dist, self.policy.torch_device)

    def parallel_step(self, module):
        """A pretext module's `step`, routed through DDP in a distributed stage."""
        return module.step if self.dist is None else wrap_step(module, self.dist, self.policy.torch_device)


def _from_json(data: dict[str, Any]) -> StageResult:
    return StageResult(
        outputs=data["outputs"],
        summary=data["summary"],
        status=data["status"],
        artifacts=[Artifact(**a) for a in data["artifacts"]],
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_policy(config: PipelineConfig, host: PluginHost) -> DevicePolicy:
    family = host.families.get(config.model.family, "model.family")
    policy = resolve_policy(
        config.device,
        config.precision,
        Hardware.probe(),
        conv_net="channels_last" in family.variant_capabilities(config.model.variant),
    )
    apply_backend_settings(policy)
    return policy


def stage_seconds(metrics: dict[str, Any] | None, seconds: float) -> None:
    """`metrics.<stage>.seconds` is the whole stage's wall time, as in `stages.<stage>.seconds`; the
    reported epoch's own time, which a training stage's metrics carry, moves to `epoch_seconds`."""
    if not isinstance(metrics, dict):
        return
    if "seconds" in metrics:
        metrics["epoch_seconds"] = metrics["seconds"]
    metrics["seconds"] = seconds


def _trains(declared: stage_table.Stage, config: PipelineConfig) -> bool:
    """A training stage with no epochs to run (pretraining disabled) skips in this process: starting
    its DDP workers would cost each of them a torch import and a process group, ~10 s, to say "skipped"."""
    return declared.epochs is None or declared.epochs(config) > 0


def execute_stage(stage: str, config: PipelineConfig, run: Run, host: PluginHost) -> dict[str, Any]:
    """Run one stage and record it; returns the stage's entry of summary.json plus its artifacts."""
    declared = stage_table.stage(stage)
    # data.mean/std/image_size: auto → the values the pretrained weights were trained with
    config = auto_inputs(config, host.families.get(config.model.family, "model.family"))
    policy = device_policy(config, host)
    final_url = run.stage_url(stage)
    staging = storage.local_staging_dir(final_url)
    ctx = StageContext(stage, config, host, run, policy, staging)
    started = _now()
    run.update(lambda s: s["stages"].__setitem__(stage, {"status": "running", "started": started}))
    host.stage_started(run.info(), stage)
    seed_everything(config.seed)
    start = time.perf_counter()
    try:
        if config.distributed.world_size > 1 and declared.distributed and _trains(declared, config):

            def relay(epoch: int, metrics: dict) -> None:
                host.epoch_relayed(run.info(), stage, epoch, metrics)

            rank0 = launch(stage, config, run.run_id, staging, on_epoch=relay)
            if rank0 is None:  # this host trained its shards; the host with global rank 0 publishes the stage
                storage.discard_dir(staging)
                seconds = round(time.perf_counter() - start, 3)
                return {"stage": stage, "status": "joined", "seconds": seconds, "url": final_url, "artifacts": []}
            result = _from_json(rank0)
        else:
            result = declared.function(ctx)
        undeclared = sorted(set(result.outputs) - set(declared.outputs))
        if undeclared:
            raise StageError(
                f"{stage}: published output(s) {', '.join(undeclared)} that the stage table does not "
                f"declare (core/stage_table.py)"
            )
        seconds = round(time.perf_counter() - start, 3)
        storage.publish_dir(staging, final_url)
    except BaseException as exc:
        storage.discard_dir(staging)
        seconds = round(time.perf_counter() - start, 3)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        run.update(
            lambda s: s["stages"].__setitem__(
                stage, {"status": "failed", "seconds": seconds, "error": message, "started": started, "ended": _now()}
            )
        )
        host.stage_ended(run.info(), stage, "failed", seconds, {})
        raise
    entry = {
        "status": result.status,
        "seconds": seconds,
        "started": started,
        "ended": _now(),
        "outputs": result.outputs,
    }

    def record(summary: dict[str, Any]) -> None:
        summary["stages"][stage] = entry
        summary.setdefault("device", {}).update(policy.as_summary())  # keeps what stages added (compiled)
        deep_merge(summary, result.summary)
        stage_seconds(summary.get("metrics", {}).get(stage), seconds)

    run.update(record)
    host.stage_ended(run.info(), stage, result.status, seconds, result.outputs)
    log.info("stage %s %s in %.1fs", stage, result.status, seconds)
    return {"stage": stage, **entry, "url": final_url, "artifacts": result.artifacts}
