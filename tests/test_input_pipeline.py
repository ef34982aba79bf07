"""The input pipeline over the Arrow store: decoded cache, seeded workers, loader settings, materialised copies."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from graftflow.core.config import PipelineConfig, PluginRef
from graftflow.core.data.augmentation import augment_policy
from graftflow.core.data.dataset import ArrowImageDataset, auto_workers, cache_fits, make_loader, normalizer, select
from graftflow.core.data.splits import stratified_split
from graftflow.core.data.store import build_store, read_info
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.specs import ImageRecord
from graftflow.core.stages.base import execute_stage


def _png(seed: int, size: int = 12) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    url = str(tmp_path_factory.mktemp("store") / "s")
    records = [ImageRecord(_png(i, 12 + i % 3), f"c{i % 2}", f"img{i}.png") for i in range(40)]
    build_store(records, url, {"val": 0.2, "test": 0.2, "seed": 0}, {"source": "test"}, stratified_split)
    return url


def test_decoded_cache_equals_decoding_each_image(store):
    sel = select(store, "train", None, "test")
    plain = ArrowImageDataset(sel, 3, 8)
    cached = ArrowImageDataset(sel, 3, 8, cache=True)
    assert cached.cached.shape == (len(sel), 3, 8, 8) and cached.cached.dtype == torch.uint8
    for i in range(len(sel)):
        assert torch.equal(plain.decode(i), cached.decode(i))
    norm = normalizer([0.5], [0.5], 3)
    a = ArrowImageDataset(sel, 3, 8, normalize=norm)
    b = ArrowImageDataset(sel, 3, 8, normalize=norm, cache=True)
    batch = b.__getitems__([3, 0, 5])
    for (image, label), i in zip(batch, [3, 0, 5], strict=False):
        assert torch.equal(image, a[i][0]) and label == a[i][1]


def test_the_workers_fill_the_shared_cache_during_the_first_epoch(store):
    """The cache is decoded where the images are first read: by the DataLoader workers, into shared memory
    the training process sees; it then serves later epochs (and equals decoding each image)."""
    sel = select(store, ["train", "val", "test"], None, "test")
    cached = ArrowImageDataset(sel, 3, 8, cache=True)
    assert cached.cached.is_shared() and not cached.filled.any()  # nothing decoded at construction
    loader = make_loader(cached, 8, True, 2, seed=0)
    first = torch.cat([images for images, _ in loader])
    assert cached.filled.all()  # filled by the two worker processes, visible here
    plain = ArrowImageDataset(sel, 3, 8)
    assert all(torch.equal(cached.cached[i], plain.decode(i)) for i in range(len(sel)))
    again = torch.cat([images for images, _ in loader])
    assert sorted(first.flatten(1).sum(1).tolist()) == sorted(again.flatten(1).sum(1).tolist())


def _batches(store: str, seed: int, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    host = PluginHost()
    refs = [
        PluginRef.model_validate(r)
        for r in (
            {"name": "random-resized-crop", "size": 8},
            "horizontal-flip",
            {"name": "gaussian-noise", "sigma": 0.1},
        )
    ]
    ops = augment_policy(host, refs, "augment.train").sample
    ds = ArrowImageDataset(select(store, "train", None, "test"), 3, 12, ops, cache=True)
    loader = make_loader(ds, 8, True, workers, seed, prefetch_factor=2, persistent_workers=False)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_two_runs_with_the_same_seed_give_the_same_augmented_batches_with_workers(store):
    first, again, other = _batches(store, 7, 2), _batches(store, 7, 2), _batches(store, 8, 2)
    assert len(first) == len(again) > 1
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=False))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=False))


def test_loader_settings_and_automatic_defaults():
    assert auto_workers(3, 10) == 3
    assert auto_workers("auto", 100, cpus=16) == 0  # too small to pay for worker start-up
    assert auto_workers("auto", 5000, cpus=2) == 1 and auto_workers("auto", 5000, cpus=16) == 4
    assert cache_fits(1000, 3, 64) and not cache_fits(10**6, 3, 224) and not cache_fits(10, 3, 8, False)
    loader = make_loader(list(range(10)), 2, False, 1, 0, prefetch_factor=4, persistent_workers=False)
    assert loader.prefetch_factor == 4 and not loader.persistent_workers
    assert make_loader(list(range(10)), 2, False, 1, 0).persistent_workers
    config = PipelineConfig.model_validate(
        {"data": {"num_workers": "auto", "cache_decoded": False, "prefetch_factor": 3}}
    )
    assert config.data.num_workers == "auto" and config.data.cache_decoded is False


def test_materialize_writes_k_augmented_copies_that_later_stages_train_on(tmp_path):
    root = tmp_path / "images"
    for i in range(30):
        path = root / f"c{i % 3}" / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_png(i, 10))
    config = PipelineConfig.model_validate(
        {
            "artifact_root": str(tmp_path / "runs"),
            "data": {
                "source": {"kind": "folder", "path": str(root)},
                "cache_dir": str(tmp_path / "datasets"),
                "image_size": 8,
                "batch_size": 8,
            },
            "augment": {
                "train": [{"name": "horizontal-flip"}, {"name": "gaussian-noise", "sigma": 0.1}, "mixup"],
                "materialize": 2,
                "preview": 4,
            },
            "pretrain": {"enabled": False},
            "finetune": {"freeze_epochs": 0, "epochs": 1, "schedule": "constant"},
        }
    )
    host = PluginHost()
    run = Run.open(config)
    for stage in ("acquire", "augment", "finetune"):
        execute_stage(stage, config, run, host)
    summary = run.summary()
    original = summary["data"]["split_counts"]
    made = summary["augment"]["materialized"]
    assert made["copies"] == 2 and made["source"] == summary["data"]["path"]
    assert made["split_counts"]["train"] == 2 * original["train"]
    assert made["split_counts"]["val"] == original["val"] and made["split_counts"]["test"] == original["test"]
    info = read_info(made["path"])
    assert info.class_names == ["c0", "c1", "c2"] and info.provenance["source"] == "augment.materialize"
    train = select(made["path"], "train", None, "test")
    copies = ArrowImageDataset(train, 3, 8)
    assert copies.decode(0).shape == (3, 8, 8)
    run_dir = Path(run.url)
    assert (run_dir / "augment" / "preview.png").read_bytes()[:4] == b"\x89PNG"
    policy = json.loads((run_dir / "augment" / "policy.json").read_text())
    assert [e["placement"] for e in policy["train"]] == ["sample", "sample", "batch"]
    assert summary["stages"]["finetune"]["status"] == "completed"  # trained on the copies, with MixUp soft targets
    assert summary["finetune"]["images"] == 2 * original["train"]


def test_batch_ops_in_the_workers_are_seeded_and_normalised(store):
    """On a CPU device task_loaders runs batch ops in the workers (BatchCollate): same seed, same batches."""
    from graftflow.core.data.augmentation import batch_normalizer, compose_batch
    from graftflow.core.data.dataset import BatchCollate

    host = PluginHost()
    refs = [PluginRef.model_validate({"name": n, "placement": "batch"}) for n in ("horizontal-flip", "random-erasing")]
    ops = augment_policy(host, refs, "augment.train").batch

    def batches(seed):
        ds = ArrowImageDataset(select(store, "train", None, "test"), 3, 8, cache=True)
        collate = BatchCollate(compose_batch(ops, batch_normalizer([0.5], [0.5], 3)))
        return [x for x, _ in make_loader(ds, 8, True, 2, seed, collate_fn=collate, persistent_workers=False)]

    first, again = batches(3), batches(3)
    assert all(a.dtype == torch.float32 and torch.equal(a, b) for a, b in zip(first, again, strict=False))
    assert float(torch.cat(first).min()) >= -1 and float(torch.cat(first).max()) <= 1


@pytest.mark.slow
def test_loader_workers_survive_a_prefect_flow_in_the_same_process(prefect_harness, store):
    """`graft run` trains inside a Prefect task: forked workers inherit Prefect's thread-exit hooks.

    Without `forget_parent_exit_hooks` each worker exits with code 1 at shutdown (Prefect's
    service drain fails its assertion in the child) and torch raises in the stage.
    """
    from prefect import flow
    from torch.utils.data import DataLoader

    from graftflow.core.data.dataset import ArrowImageDataset, make_loader

    @flow
    def a_flow() -> int:
        return 1

    assert a_flow() == 1  # Prefect's log and event services are now running in this process
    ds = ArrowImageDataset(select(store, "train", None, "test"), 3, 8, cache=True)
    batches = list(make_loader(ds, 8, True, 2, 0, persistent_workers=False))
    assert sum(len(x) for x, _ in batches) == len(ds)
    with pytest.raises(RuntimeError, match="exited unexpectedly"):  # the negative control: plain torch
        list(DataLoader(ds, batch_size=8, num_workers=2, persistent_workers=False))
