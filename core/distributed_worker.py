"""One rank of a distributed stage (started by `graftflow.core.distributed.launch` through torch.distributed.run)."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from graftflow.core import stage_table
from graftflow.core.config import PipelineConfig
from graftflow.core.distributed import EVENTS_ENV, DistInfo, EpochRelay, exit_with_launcher, result_to_json
from graftflow.core.errors import GraftError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import StageContext, device_policy, seed_everything


def main(stage: str, config_path: str, run_id: str, out: str, exchange: str) -> int:
    import os

    exit_with_launcher()
    config = PipelineConfig.model_validate_json(Path(config_path).read_text())
    host = PluginHost(config.plugins)
    policy = device_policy(config, host)
    local_rank = int(os.environ["LOCAL_RANK"])
    if policy.device_type == "cuda":
        torch.cuda.set_device(local_rank)
        policy = dataclasses.replace(policy, device=f"cuda:{local_rank}")
    backend = "nccl" if policy.device_type == "cuda" else "gloo"
    dist.init_process_group(backend)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, backend)
    seed_everything(config.seed)
    scratch = None if info.is_main else tempfile.TemporaryDirectory(prefix="graft-rank-")
    if info.is_main and os.environ.get(EVENTS_ENV):
        host.add_observer(EpochRelay(os.environ[EVENTS_ENV]), "graftflow-ddp-relay")
    ctx = StageContext(
        stage, config, host, Run(config, run_id), policy, Path(out) if info.is_main else Path(scratch.name), dist=info
    )
    try:
        result = stage_table.stage(stage).function(ctx)
        if info.is_main:
            layout = {"world_size": info.world_size, "backend": backend}
            if config.distributed.nnodes > 1:
                layout["nnodes"] = config.distributed.nnodes
            result.summary.setdefault(stage, {})["distributed"] = layout
            Path(exchange, "result.json").write_text(json.dumps(result_to_json(result), default=str))
        dist.barrier()
        return 0
    except GraftError as exc:
        if info.is_main or local_rank == 0:  # each host's launcher reports the user's mistake in one line
            Path(exchange, "error.json").write_text(json.dumps({"message": str(exc)}))
        raise
    finally:
        dist.destroy_process_group()
        if scratch is not None:
            scratch.cleanup()


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
