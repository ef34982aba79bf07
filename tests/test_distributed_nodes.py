"""DDP across hosts, on loopback: two launchers of one process each meet at a c10d rendezvous (gloo).

The two "nodes" are two `execute_stage` calls of the same run in two threads, as two hosts' workers
would make them, sharing the run's folder. They must end with exactly the weights that one node
with two processes ends with: the same shards, the same all-reduced gradients, rank 0's buffers.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from safetensors.torch import load_file

from graftflow.core.config import load_config
from graftflow.core.errors import ConfigError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from tests.prefect_server import free_port
from tests.support import DIGITS

pytestmark = pytest.mark.slow


def tiny(tmp_path, *extra):
    return load_config(
        DIGITS,
        [
            f"artifact_root={tmp_path / 'runs'}",
            f"data.cache_dir={tmp_path / 'ds'}",
            "data.image_size=8",
            "pretrain.enabled=false",
            "finetune.freeze_epochs=1",
            "finetune.epochs=1",
            "finetune.schedule=constant",
            "checkpoints.every_steps=null",
            *extra,
        ],
    )


def weights(run: Run) -> dict[str, torch.Tensor]:
    return load_file(f"{run.url}/finetune/model/model.safetensors")


def test_two_nodes_end_with_the_weights_of_one_node_with_two_processes(tmp_path):
    one_node = tiny(tmp_path, "distributed.nproc_per_node=2")
    reference = Run.open(one_node)
    execute_stage("acquire", one_node, reference, PluginHost())
    execute_stage("finetune", one_node, reference, PluginHost())

    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [
        tiny(tmp_path, "distributed.nnodes=2", f"distributed.node_rank={rank}", f"distributed.rdzv_endpoint={endpoint}")
        for rank in (0, 1)
    ]
    run = Run.open(nodes[0])
    execute_stage("acquire", nodes[0], run, PluginHost())  # the same content-addressed store: a cache hit
    with ThreadPoolExecutor(2) as pool:
        ends = list(pool.map(lambda cfg: execute_stage("finetune", cfg, run, PluginHost()), nodes))

    assert sorted(e["status"] for e in ends) == ["completed", "joined"]  # rank 0's host published, the other not
    summary = run.summary()
    assert summary["finetune"]["distributed"] == {"world_size": 2, "backend": "gloo", "nnodes": 2}
    assert summary["finetune"]["steps"] == reference.summary()["finetune"]["steps"]
    got, want = weights(run), weights(reference)
    assert got.keys() == want.keys()
    differing = [k for k in want if not torch.equal(got[k], want[k])]
    assert not differing, differing
    assert not list(tmp_path.rglob("*partial*"))  # nothing half-written by either host


def test_several_hosts_need_a_rendezvous_endpoint(tmp_path):
    with pytest.raises(ConfigError, match="distributed: .*rdzv_endpoint"):
        tiny(tmp_path, "distributed.nnodes=2")
    with pytest.raises(ConfigError, match="node_rank must be < nnodes"):
        tiny(tmp_path, "distributed.nnodes=2", "distributed.node_rank=2", "distributed.rdzv_endpoint=h:1")


def test_a_disabled_pretrain_starts_no_ddp_workers(tmp_path, monkeypatch):
    """Pretraining off under `nproc_per_node: 2` is skipped in this process: launching two workers to
    say "skipped" cost ~24 s a run on two busy cores. The launcher is replaced by one that fails, so
    the test fails if the stage starts workers at all (nothing is mocked on the path that runs)."""
    from graftflow.core.stages import base

    def no_launch(*args, **kwargs):
        raise AssertionError("a stage with no epochs launched DDP workers")

    monkeypatch.setattr(base, "launch", no_launch)
    config = tiny(tmp_path, "distributed.nproc_per_node=2")
    run = Run.open(config)
    result = execute_stage("pretrain", config, run, PluginHost())
    assert result["status"] == "skipped"
