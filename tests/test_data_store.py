"""The Arrow store, splits and the folder source."""

import io
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from graftflow.core.data.dataset import ArrowImageDataset, select
from graftflow.core.data.splits import stratified_split
from graftflow.core.data.store import build_store, is_complete, read_info, store_key
from graftflow.core.errors import DataError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import ImageRecord


def png(value: int, size=(6, 5)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full(size, value, np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def records(n_per_class=20, classes=("cat", "dog", "10", "2")):
    return [
        ImageRecord(png(i * 7 % 256 + c), label, f"mem://{label}/{i}.png")
        for c, label in enumerate(classes)
        for i in range(n_per_class)
    ]


SPLIT = {"val": 0.1, "test": 0.2, "seed": 0}


def test_stratified_split_is_per_class_and_order_independent():
    labels = [i % 3 for i in range(300)]
    keys = [f"k{i:04d}" for i in range(300)]
    a = stratified_split(labels, keys, 0.1, 0.2, seed=1)
    counts = Counter(zip(labels, a, strict=False))
    for c in range(3):
        assert (counts[(c, "test")], counts[(c, "val")], counts[(c, "train")]) == (20, 10, 70)
    perm = np.random.default_rng(0).permutation(300)
    b = stratified_split([labels[i] for i in perm], [keys[i] for i in perm], 0.1, 0.2, seed=1)
    assert {keys[i]: b[j] for j, i in enumerate(perm)} == dict(zip(keys, a, strict=False))
    assert stratified_split(labels, keys, 0.1, 0.2, seed=2) != a


def test_store_roundtrip_schema_and_classes(tmp_path):
    url = str(tmp_path / "store")
    info = build_store(records(), url, SPLIT, {"source": "test"}, stratified_split)
    assert is_complete(url) and info.rows == 80
    assert info.class_names == ["2", "10", "cat", "dog"]  # natural order
    table = pq.read_table(next((tmp_path / "store").glob("part-*.parquet")))
    assert table.schema.names == ["image", "label", "split", "source", "sha256"]
    assert b"graft.class_names" in table.schema.metadata
    assert read_info(url).split_counts == {"train": 56, "val": 8, "test": 16}
    sel = select(url, "train", ["dog", "cat"], "finetune.classes")
    assert sel.class_names == ["dog", "cat"] and set(sel.labels.tolist()) == {0, 1} and len(sel) == 28
    image, label = ArrowImageDataset(sel, channels=1, image_size=12)[0]
    assert image.shape == (1, 12, 12) and image.dtype.is_floating_point is False


def test_duplicates_are_dropped_and_empty_sources_fail(tmp_path):
    recs = records(5) + records(5)[:3]
    info = build_store(recs, str(tmp_path / "a"), SPLIT, {}, stratified_split)
    assert info.duplicates_dropped == 3 and info.rows == 20
    with pytest.raises(DataError, match="yielded no images"):
        build_store([], str(tmp_path / "b"), SPLIT, {}, stratified_split)
    assert not (tmp_path / "b").exists()
    assert not list(tmp_path.glob(".b.partial-*"))


def test_crash_mid_write_leaves_no_store(tmp_path):
    def exploding():
        yield from records(3)
        raise RuntimeError("connection reset")

    with pytest.raises(RuntimeError):
        build_store(exploding(), str(tmp_path / "s"), SPLIT, {}, stratified_split)
    assert list(tmp_path.iterdir()) == []


def test_unknown_class_filter_is_a_clear_error(tmp_path):
    url = str(tmp_path / "store")
    build_store(records(), url, SPLIT, {}, stratified_split)
    with pytest.raises(
        DataError, match="finetune.classes: class 'cow' is not in the data; classes are 2, 10, cat, dog"
    ):
        select(url, "train", ["cat", "cow"], "finetune.classes")


def test_store_key_changes_with_content():
    a = store_key({"source": "folder", "fingerprint": "x", "split": SPLIT})
    assert a == store_key({"split": SPLIT, "fingerprint": "x", "source": "folder"})
    assert a != store_key({"source": "folder", "fingerprint": "y", "split": SPLIT})


def test_folder_source_at_an_fsspec_url():
    import fsspec

    fs = fsspec.filesystem("memory")
    for label in ("ants", "bees"):
        for i in range(3):
            fs.pipe(f"/imgs/{label}/{i}.png", png(i + (50 if label == "bees" else 0)))
    fs.pipe("/imgs/README.txt", b"not an image")
    source = PluginHost(env={}).sources.get("folder")
    params = {"path": "memory://imgs", "extensions": [".png"]}
    source.check(params)
    recs = list(source.load(params, None))
    assert sorted(r.label for r in recs) == ["ants"] * 3 + ["bees"] * 3
    assert recs[0].source.startswith("memory://")
    before = source.fingerprint(params)
    fs.pipe("/imgs/bees/3.png", png(99))
    assert source.fingerprint(params) != before
    with pytest.raises(DataError, match="data.source.path: folder 'memory://nope' does not exist"):
        source.check({"path": "memory://nope", "extensions": [".png"]})
