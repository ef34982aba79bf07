"""Self-supervised pretexts never read labels: with every label changed, pretraining ends with the same weights.

Two stores hold the same images in the same rows and splits; in the second the label column is shuffled
(each image gets another image's label). Pretraining reads the first store in one run and the second in
another — the same seed, config and data order — and each SSL pretext must end with bit-identical
backbones and the same loss history. The negative control is supervised pretraining on the same two
stores: it does read labels, and its weights differ.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from graftflow.core import storage
from graftflow.core.config import load_config
from graftflow.core.data.store import SUCCESS, read_table
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.runs import Run
from graftflow.core.stages.base import execute_stage
from tests.support import DIGITS

ROWS = 160  # a slice of the digits store (112 training images) keeps each pretraining to a few steps

PRETEXTS = {
    "simclr": "pretrain.pretext={name: simclr, proj_dim: 16}",
    "moco": "pretrain.pretext={name: moco, proj_dim: 16, queue: 64}",
    "simmim": "pretrain.pretext={name: simmim, mask_ratio: 0.5, mask_patch: 2}",
    "supervised": "pretrain.pretext=supervised",
}


def derived_store(source: str, dest: Path, shuffle_labels: bool) -> str:
    """The first ROWS rows of `source` (same images, splits and class names), labels shuffled if asked."""
    table = read_table(source).slice(0, ROWS)
    if shuffle_labels:
        labels = table["label"].to_numpy()
        shuffled = labels[np.random.default_rng(1).permutation(len(labels))]
        assert (shuffled != labels).mean() > 0.8  # most images now carry another class
        table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(shuffled, pa.int32()))
    dest.mkdir(parents=True)
    pq.write_table(table, dest / "part-00000.parquet")
    info = json.loads(Path(source, SUCCESS).read_text())
    (dest / SUCCESS).write_text(json.dumps({**info, "rows": ROWS}))
    return str(dest)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(base overrides, run ids reading the original and the relabelled store)."""
    root = tmp_path_factory.mktemp("labels")
    base = [
        f"artifact_root={root / 'runs'}",
        f"data.cache_dir={root / 'ds'}",
        "data.image_size=8",
        "data.num_workers=0",
        "augment.train=[]",
        "pretrain.classes=null",  # a class filter reads labels by design: use every image
        "pretrain.loss=null",
        "pretrain.epochs=1",
        "pretrain.batch_size=32",
        "pretrain.schedule=constant",
        "checkpoints.every_steps=null",
    ]
    config, host = load_config(DIGITS, base), PluginHost()
    runs = {}
    for shuffled in (False, True):
        run = Run.open(config)
        execute_stage("acquire", config, run, host)
        pointer = Path(run.url) / "acquire" / "dataset.json"
        record = json.loads(pointer.read_text())
        record["path"] = derived_store(record["path"], root / f"store-{shuffled}", shuffled)
        storage.write_json(str(pointer), record)
        runs[shuffled] = run.run_id
    return base, runs


def pretrained(stores, pretext: str, shuffled: bool) -> tuple[dict[str, torch.Tensor], list[dict]]:
    base, runs = stores
    config = load_config(DIGITS, [*base, PRETEXTS[pretext]])
    run = Run(config, runs[shuffled])
    execute_stage("pretrain", config, run, PluginHost())
    history = json.loads((Path(run.url) / "pretrain" / "history.json").read_text())
    return load_file(f"{run.url}/pretrain/backbone/model.safetensors"), history


def losses(history: list[dict]) -> list[float]:
    return [e["train_loss"] for e in history]


@pytest.mark.parametrize("pretext", ["simclr", "moco", "simmim"])
def test_ssl_pretraining_ends_the_same_whatever_the_labels(stores, pretext):
    weights, history = pretrained(stores, pretext, shuffled=False)
    relabelled, relabelled_history = pretrained(stores, pretext, shuffled=True)
    changed = [k for k in weights if not torch.equal(weights[k], relabelled[k])]
    assert not changed, f"{pretext}: {len(changed)} tensors depend on the labels, e.g. {changed[:3]}"
    assert losses(history) == losses(relabelled_history)


def test_supervised_pretraining_on_the_same_stores_does_read_the_labels(stores):
    weights, history = pretrained(stores, "supervised", shuffled=False)
    relabelled, relabelled_history = pretrained(stores, "supervised", shuffled=True)
    assert any(not torch.equal(weights[k], relabelled[k]) for k in weights)
    assert losses(history) != losses(relabelled_history)
