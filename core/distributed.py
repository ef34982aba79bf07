"""Several processes, one stage: DDP launched through `torch.distributed.run`.

With `distributed.nproc_per_node: N > 1`, a training stage starts N processes
(`torch.distributed.run --standalone`), each running the same stage function
on its shard of the data with the model wrapped in DistributedDataParallel.
Rank 0 alone writes: the other ranks get a throwaway output directory, so
stage code needs no "if rank == 0" of its own. Training loss is averaged over
ranks (all-reduce); rank 0 hands the stage's result back to the parent as JSON.
Backend: NCCL on CUDA, gloo on CPU (what the tests use: 2 processes).

Across hosts (`distributed.nnodes > 1`), every host runs the same stage of the
same run with its own `node_rank`; torch.distributed.run's c10d rendezvous at
`rdzv_endpoint` (hosted by node 0) gathers them and assigns the global ranks.
Global rank 0 writes, on whichever host it runs: the run's folder must be on
storage every host reaches (s3://, a shared file system). The launch on the
other hosts returns None, and their stage publishes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from graftflow.core.errors import StageError
from graftflow.core.hookspecs import hookimpl


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class _StepModule(nn.Module):
    """Routes a pretext's `step` through `forward`, which is what DDP hooks for gradient sync."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.module.step(images, labels)


def wrap(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP around `model`. Unused parameters are expected: freezing leaves groups without gradients."""
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def wrap_step(module: nn.Module, info: DistInfo, device: torch.device):
    ddp = wrap(_StepModule(module), info, device)
    return lambda images, labels: ddp(images, labels)


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value /= dist.get_world_size()
    return value


def launcher_args(dist_cfg, rdzv_id: str) -> list[str]:
    """torch.distributed.run's options: standalone on one host, c10d rendezvous at node 0 across hosts."""
    per_node = f"--nproc_per_node={dist_cfg.nproc_per_node}"
    if dist_cfg.nnodes == 1:
        return ["--standalone", per_node]
    return [
        f"--nnodes={dist_cfg.nnodes}",
        per_node,
        f"--node_rank={dist_cfg.node_rank}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={dist_cfg.rdzv_endpoint}",
        f"--rdzv_id={rdzv_id}",
        # node 0 hosts the rendezvous store; the others only connect (several nodes may share one address)
        f"--rdzv_conf=is_host={int(dist_cfg.node_rank == 0)},join_timeout={dist_cfg.rdzv_timeout}",
        "--max_restarts=0",
    ]


EVENTS_ENV = (
    "GRAFT_DDP_EVENTS"  # rank 0 appends each epoch's metrics here as a JSON line (`EpochRelay`; read by `_relay`)
)
LAUNCHER_ENV = "GRAFT_DDP_LAUNCHER"  # the pid of the process that called `launch`


def exit_with_launcher(poll_seconds: float = 0.5) -> None:
    """End this rank as soon as the process that launched the stage, or its torch launcher, is gone.

    torch.distributed.run starts each rank in a session of its own, so a `graft run` killed with
    SIGKILL (or its whole process group) would leave the ranks training on, unseen: they would
    go on writing the run's checkpoints while a resumed run reads them, and clear them when they
    finish. A daemon thread watches both parents and exits the rank the way a kill would.
    """
    launcher, agent = int(os.environ.get(LAUNCHER_ENV, "0")), os.getppid()

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def watch() -> None:
        while os.getppid() == agent and (launcher == 0 or alive(launcher)):
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, name="graft-exit-with-launcher", daemon=True).start()


def launch(
    stage: str, config, run_id: str, out: Path, on_epoch: Callable[[int, dict], None] | None = None
) -> dict[str, Any] | None:
    """Run this host's processes of `stage`; rank 0's result (outputs, summary, artifacts, status).

    None on a host without global rank 0: that host's processes trained their shards, and the host
    that holds rank 0 publishes the stage. `on_epoch(epoch, metrics)` is called in this process as
    rank 0 ends each epoch (on the host that holds it), so observers living here (a progress
    display, the Prefect progress artifact) follow along.
    """
    dist_cfg = config.distributed
    with tempfile.TemporaryDirectory(prefix="graft-ddp-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "config.json").write_text(config.model_dump_json())
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            *launcher_args(dist_cfg, f"{run_id}-{stage}"),
            "-m",
            "graftflow.core.distributed_worker",
            stage,
            str(tmp_path / "config.json"),
            run_id,
            str(out),
            str(tmp_path),
        ]
        events = tmp_path / "events.jsonl"
        env = {
            **os.environ,
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            EVENTS_ENV: str(events),
            LAUNCHER_ENV: str(os.getpid()),
        }
        with tempfile.TemporaryFile("w+") as output:
            proc = subprocess.Popen(cmd, stdout=output, stderr=subprocess.STDOUT, text=True, env=env)
            read = 0
            while True:
                finished = proc.poll() is not None
                read = _relay(events, read, on_epoch)
                if finished:
                    break
                time.sleep(0.2)
            output.seek(0)
            log_text = output.read()
        error = tmp_path / "error.json"
        if error.exists():
            raise StageError(json.loads(error.read_text())["message"])
        where = f"{dist_cfg.world_size} processes" + (
            f", node {dist_cfg.node_rank} of {dist_cfg.nnodes}" if dist_cfg.nnodes > 1 else ""
        )
        if proc.returncode != 0:
            tail = "\n".join(log_text.strip().splitlines()[-15:])
            raise StageError(
                f"{stage}: distributed run ({where}) failed with exit code {proc.returncode}: "
                f"{tail.splitlines()[-1] if tail else ''}"
            ) from RuntimeError(tail)
        if (tmp_path / "result.json").exists():
            return json.loads((tmp_path / "result.json").read_text())
        if dist_cfg.nnodes > 1:
            return None  # rank 0 ran on another host
        raise StageError(f"{stage}: distributed run ({where}) ended without rank 0's result")


def _relay(events: Path, offset: int, on_epoch: Callable[[int, dict], None] | None) -> int:
    """Hand the complete lines written since `offset` to `on_epoch`; returns the new offset."""
    if on_epoch is None or not events.exists():
        return offset
    with open(events, encoding="utf-8") as f:
        f.seek(offset)
        chunk = f.read()
    complete = chunk[: chunk.rfind("\n") + 1]
    for line in complete.splitlines():
        event = json.loads(line)
        on_epoch(event["epoch"], event["metrics"])
    return offset + len(complete.encode("utf-8"))


class EpochRelay:
    """Rank 0's observer: each epoch's metrics as a JSON line for the launching process (`launch`)."""

    def __init__(self, path: str):
        self.path = path

    @hookimpl
    def graft_on_epoch_end(self, run, stage, epoch, metrics):
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"epoch": epoch, "metrics": dict(metrics)}) + "\n")


def result_to_json(result) -> dict[str, Any]:
    return {
        "outputs": result.outputs,
        "summary": result.summary,
        "status": result.status,
        "artifacts": [asdict(a) for a in result.artifacts],
    }
