"""Layouts (class folders, CSV/Parquet label tables), bad images, multi-label stores, and the folder source."""

import http.server
import io
import threading
import zipfile
from functools import partial

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from graftflow.core.data.dataset import select
from graftflow.core.data.layouts import records
from graftflow.core.data.splits import stratified_split
from graftflow.core.data.store import build_store, read_info, read_table
from graftflow.core.errors import DataError
from graftflow.core.plugin_manager import PluginHost

SPLIT = {"val": 0.1, "test": 0.2, "seed": 0}


def jpeg(value: int, size=(12, 8)) -> bytes:
    buf = io.BytesIO()
    rgb = np.zeros((size[1], size[0], 3), np.uint8)
    rgb[..., 0] = value
    Image.fromarray(rgb).save(buf, format="JPEG")
    return buf.getvalue()


def local(tmp_path, files: dict[str, bytes | str]):
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return fsspec.filesystem("file"), str(tmp_path)


def table_params(**layout):
    return {"layout": {"kind": "table", **layout}}


# A Severstal-shaped table: ImageId, ClassId, EncodedPixels; several rows per image; an empty EncodedPixels row.
SEVERSTAL_CSV = """ImageId,ClassId,EncodedPixels
a.jpg,1,1 3 10 5
b.jpg,3,5 2
b.jpg,4,9 9
c.jpg,3,
d.jpg,2,4 4
d.jpg,2,8 1
"""
IMAGES = {f"train_images/{n}.jpg": jpeg(i * 40) for i, n in enumerate("abcde")}


@pytest.mark.parametrize(
    "target, expected",
    [
        ("multi", {"a.jpg": ("1",), "b.jpg": ("3", "4"), "c.jpg": (), "d.jpg": ("2",)}),
        ("any", {"a.jpg": "defect", "b.jpg": "defect", "c.jpg": "no_defect", "d.jpg": "defect"}),
    ],
)
def test_label_table_groups_rows_into_label_sets(tmp_path, target, expected):
    fs, root = local(tmp_path, {"train.csv": SEVERSTAL_CSV, **IMAGES})
    recs = records(
        fs,
        root,
        table_params(
            table="train.csv",
            image_column="ImageId",
            label_column="ClassId",
            images="train_images",
            target=target,
            require_column="EncodedPixels",
            positive="defect",
            negative="no_defect",
        ),
        "test",
    )
    got = {r.source.rsplit("/", 1)[1]: (r.labels if target == "multi" else r.label) for r in recs}
    assert got == expected  # e.jpg is not in the table: ignored by default
    assert recs.report["rows"] == 6 and recs.report["target"] == target


def test_unlisted_images_can_count_as_unlabelled(tmp_path):
    fs, root = local(tmp_path, {"train.csv": SEVERSTAL_CSV, **IMAGES})
    recs = list(
        records(
            fs,
            root,
            table_params(
                table="train.csv",
                image_column="ImageId",
                label_column="ClassId",
                images="train_images",
                target="any",
                require_column="EncodedPixels",
                unlisted="include",
            ),
            "test",
        )
    )
    assert {r.source.rsplit("/", 1)[1]: r.label for r in recs}["e.jpg"] == "negative"
    assert len(recs) == 5


def test_single_target_refuses_several_labels_and_leaves_out_unlabelled(tmp_path):
    fs, root = local(tmp_path, {"train.csv": SEVERSTAL_CSV, **IMAGES})
    with pytest.raises(
        DataError, match="data.source.layout.target: image 'b.jpg' has labels 3, 4 in train.csv; use target: multi"
    ):
        list(
            records(
                fs,
                root,
                table_params(
                    table="train.csv",
                    image_column="ImageId",
                    label_column="ClassId",
                    images="train_images",
                    require_column="EncodedPixels",
                ),
                "test",
            )
        )
    csv = "ImageId,ClassId\na.jpg,1\nc.jpg,\nd.jpg,2\n"
    fs, root = local(tmp_path, {"single.csv": csv})
    recs = records(
        fs,
        root,
        table_params(table="single.csv", image_column="ImageId", label_column="ClassId", images="train_images"),
        "test",
    )
    assert sorted(r.label for r in recs) == ["1", "2"]
    assert recs.report["unlabelled_skipped"] == {"count": 1, "first": ["c.jpg"]}


def test_parquet_table_with_ids_without_suffix_and_separator(tmp_path):
    fs, root = local(tmp_path, IMAGES)
    pq.write_table(pa.table({"id": ["a", "b", "d"], "tags": ["1 2", "3", "2"]}), tmp_path / "labels.parquet")
    recs = records(
        fs,
        root,
        table_params(
            table="labels.parquet",
            image_column="id",
            label_column="tags",
            images="train_images",
            image_suffix=".jpg",
            target="multi",
            label_separator=" ",
        ),
        "test",
    )
    assert {r.source.rsplit("/", 1)[1]: r.labels for r in recs} == {
        "a.jpg": ("1", "2"),
        "b.jpg": ("3",),
        "d.jpg": ("2",),
    }


def test_table_errors_name_the_field(tmp_path):
    fs, root = local(tmp_path, {"train.csv": SEVERSTAL_CSV, **IMAGES})
    with pytest.raises(
        DataError,
        match="data.source.layout.label_column: column 'Label' is not in train.csv; "
        "columns are ImageId, ClassId, EncodedPixels",
    ):
        list(records(fs, root, table_params(table="train.csv", image_column="ImageId", label_column="Label"), "t"))
    with pytest.raises(DataError, match="data.source.layout.table: 'nope.csv' does not exist"):
        list(records(fs, root, table_params(table="nope.csv"), "t"))
    with pytest.raises(DataError, match="data.source.layout.table: '../x.csv' must be a path inside the data"):
        list(records(fs, root, table_params(table="../x.csv"), "t"))


def test_bad_images_skip_with_counts_or_fail_naming_the_first(tmp_path):
    files = {
        "train.csv": "ImageId,ClassId\na.jpg,1\nb.jpg,2\ngone.jpg,1\nbroken.jpg,2\ntext.jpg,1\n",
        "train_images/a.jpg": jpeg(10),
        "train_images/b.jpg": jpeg(200),
        "train_images/broken.jpg": jpeg(90)[:60],  # a truncated JPEG: the header reads, the data does not
        "train_images/text.jpg": b"not an image",
    }
    fs, root = local(tmp_path, files)
    layout = dict(table="train.csv", image_column="ImageId", label_column="ClassId", images="train_images")
    with pytest.raises(
        DataError,
        match="data.source: image 'gone.jpg' is named in train.csv but not in "
        "'train_images'; set data.source.on_bad_image: skip",
    ):
        list(records(fs, root, table_params(**layout), "t"))
    recs = records(fs, root, {**table_params(**layout), "on_bad_image": "skip"}, "t")
    assert sorted(r.source.rsplit("/", 1)[1] for r in recs) == ["a.jpg", "b.jpg"]
    assert recs.report["bad_images"] == {"missing": 1, "unreadable": 2, "first": ["gone.jpg", "broken.jpg", "text.jpg"]}
    with pytest.raises(DataError, match="image 'cat/broken.jpg' cannot be read as an image"):
        folders = {"cat/ok.jpg": jpeg(1), "cat/broken.jpg": jpeg(2)[:60], "dog/ok.jpg": jpeg(3)}
        fs2, root2 = local(tmp_path / "f", folders)
        list(records(fs2, root2, {}, "t"))


def test_multi_label_store_holds_label_sets(tmp_path):
    fs, root = local(tmp_path, {"train.csv": SEVERSTAL_CSV, **IMAGES})
    recs = records(
        fs,
        root,
        {
            **table_params(
                table="train.csv",
                image_column="ImageId",
                label_column="ClassId",
                images="train_images",
                target="multi",
                require_column="EncodedPixels",
                unlisted="include",
            )
        },
        "test",
    )
    url = str(tmp_path / "store")
    info = build_store(recs, url, SPLIT, {"source": "t"}, stratified_split)
    assert info.target == "multi" and info.class_names == ["1", "2", "3", "4"]
    assert info.class_counts == {"1": 1, "2": 1, "3": 1, "4": 1}
    assert info.report["empty_label_sets"] == 2 and read_info(url).report["rows"] == 6
    assert info.image_sizes["min"] == [12, 8] and info.image_sizes["most_common"] == [[12, 8, 5]]
    table = read_table(url)
    names = info.class_names
    by_image = {
        s.rsplit("/", 1)[1]: sorted(names[i] for i in ids)
        for s, ids in zip(table["source"].to_pylist(), table["labels"].to_pylist(), strict=False)
    }
    assert by_image == {"a.jpg": ["1"], "b.jpg": ["3", "4"], "c.jpg": [], "d.jpg": ["2"], "e.jpg": []}
    assert set(table["label"].to_pylist()) == {-1}
    with pytest.raises(DataError, match="finetune.classes: the data store holds multi targets .*set task: multilabel"):
        select(url, "train", None, "finetune.classes")  # a classifier's selection refuses label sets
    sel = select(url, ["train", "val", "test"], None, "finetune.classes", frozenset({"multi"}))
    assert sel.target == "multi" and sorted(map(sorted, sel.targets.to_pylist())) == [[], [], [0], [1], [2, 3]]


def test_a_store_holds_one_kind_of_target(tmp_path):
    from graftflow.core.specs import ImageRecord

    mixed = [ImageRecord(jpeg(1), "a", "x/1"), ImageRecord(jpeg(2), "b", "x/2", labels=("b",))]
    with pytest.raises(DataError, match="mixes single and multi targets"):
        build_store(mixed, str(tmp_path / "s"), SPLIT, {}, stratified_split)
    assert not (tmp_path / "s").exists()


# --- the folder source: archives and http(s) -------------------------------------------------


def zipped(files: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_folder_source_reads_a_zip_over_http(tmp_path):
    """A real HTTP server on loopback serves the zip; fsspec's HTTP filesystem fetches it."""
    (tmp_path / "www").mkdir()
    archive = zipped({"train.csv": SEVERSTAL_CSV, **IMAGES})
    (tmp_path / "www" / "steel.zip").write_bytes(archive)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = PluginHost(env={}).sources.get("folder")
        params = {
            "path": f"http://127.0.0.1:{server.server_address[1]}/steel.zip",
            **table_params(
                table="train.csv",
                image_column="ImageId",
                label_column="ClassId",
                images="train_images",
                target="any",
                require_column="EncodedPixels",
            ),
        }
        source.check(params)
        first = source.fingerprint(params)
        work = tmp_path / "work"
        work.mkdir()
        got = {r.source.rsplit("/", 1)[1]: r.label for r in source.load(params, work)}
        assert got == {"a.jpg": "positive", "b.jpg": "positive", "c.jpg": "negative", "d.jpg": "positive"}
        (tmp_path / "www" / "steel.zip").write_bytes(zipped({"train.csv": SEVERSTAL_CSV, **IMAGES, "x": "y"}))
        assert source.fingerprint(params) != first
        with pytest.raises(DataError, match="data.source.path: archive 'http://127.0.0.1:.*/nope.zip' does not exist"):
            source.check({**params, "path": params["path"].replace("steel", "nope")})
    finally:
        server.shutdown()
        server.server_close()


def test_folder_source_zip_slip_in_memory_fs(tmp_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/zips/evil.zip", zipped({"cat/a.jpg": jpeg(1), "../../evil.jpg": jpeg(2)}))
    source = PluginHost(env={}).sources.get("folder")
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(DataError, match="archive evil.zip: member '../../evil.jpg' points outside"):
        list(source.load({"path": "memory://zips/evil.zip"}, work))
    assert not (work / "data").exists() and not list(tmp_path.rglob("evil.jpg"))
