"""The kaggle source: the real `kaggle` client against a stand-in server on loopback (tests/kaggle_standin.py).

Nothing is mocked. `KAGGLE_API_ENVIRONMENT=LOCALHOST` is set before `kaggle` is
first imported, so the client calls http://localhost/api/v1/..., and
`HTTP_PROXY` routes that to the stand-in (FACTS.md). In-process tests call the
registered DataSource (check → fingerprint → load → build_store, what the
acquire stage does); the slow ones run the real `graft` CLI in a subprocess, or
Prefect flows against the session's test server.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from graftflow.core.data.splits import stratified_split
from graftflow.core.data.store import build_store, read_table
from graftflow.core.errors import DataError, TransientDataError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.validation import plugin_params
from tests.kaggle_standin import KaggleStandIn, zip_of
from tests.leaks import assert_no_leak, find_leaks, secret_forms, server_records, sqlite_files, written_files
from tests.support import ROOT, graft

SPLIT = {"val": 0.1, "test": 0.2, "seed": 0}
COMP = "severstal-steel-defect-detection"


@pytest.fixture(scope="module")
def source():
    os.environ["KAGGLE_API_ENVIRONMENT"] = "LOCALHOST"  # before the first `import kaggle` in this process
    with contextlib.redirect_stdout(io.StringIO()):
        from kaggle.api.kaggle_api_extended import KaggleApi
    if "--local" not in KaggleApi.args:
        pytest.fail("kaggle was imported before KAGGLE_API_ENVIRONMENT=LOCALHOST: it would call the real Kaggle")
    return PluginHost(env={}).sources.get("kaggle")


@pytest.fixture
def standin(source, monkeypatch, tmp_path):
    server = KaggleStandIn().start()
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "kaggle-config").mkdir()
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))  # never a real kaggle.json
    for var, value in server.env().items():
        monkeypatch.setenv(var, value)
    yield server
    server.stop()


def jpeg(seed: int, size=(16, 8)) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    return buf.getvalue()


def class_folders(n: int = 3) -> dict[str, bytes]:
    return {f"{label}/{i}.jpg": jpeg(i + 100 * c) for c, label in enumerate(("cat", "dog")) for i in range(n)}


def severstal(n: int = 14) -> tuple[dict[str, bytes], dict[str, set[str]]]:
    """A Severstal-shaped competition: train.csv (ImageId, ClassId, EncodedPixels; several rows per image; empty
    EncodedPixels rows in the old format, unlisted images in the new), train_images/, test_images/."""
    pattern = [[1], [3, 4], [], [2], [3], [1, 2, 3], []]
    files, rows, expected = {}, ["ImageId,ClassId,EncodedPixels"], {}
    for i in range(n):
        name = f"{i:04x}c0ffee.jpg"
        classes = pattern[i % len(pattern)]
        files[f"train_images/{name}"] = jpeg(i)
        rows += [f"{name},{c},{i + 1} {c * 3} {i + 40} 7" for c in classes]
        if not classes and i % 2:
            rows.append(f"{name},1,")  # a row that says "no defect"
        expected[name] = {str(c) for c in classes}
    files["train.csv"] = ("\n".join(rows) + "\n").encode()
    files["test_images/ffff0001.jpg"] = jpeg(999)
    files["sample_submission.csv"] = b"ImageId,EncodedPixels,ClassId\n"
    return files, expected


SEVERSTAL_LAYOUT = {
    "kind": "table",
    "table": "train.csv",
    "image_column": "ImageId",
    "label_column": "ClassId",
    "images": "train_images",
    "target": "multi",
    "require_column": "EncodedPixels",
    "unlisted": "include",
}


def acquire(source, params: dict, tmp_path: Path, name: str = "store"):
    """check → fingerprint → load → build_store, as the acquire stage does."""
    p = plugin_params(source, {"download_dir": str(tmp_path / "downloads"), **params}, "data.source")
    source.check(p)
    fingerprint = source.fingerprint(p)
    work = tmp_path / f"work-{name}"
    work.mkdir()
    recs = source.load(p, work)
    info = build_store(recs, str(tmp_path / name), SPLIT, {"source": "kaggle"}, stratified_split)
    return info, fingerprint


def labels_by_image(info) -> dict[str, set[str]]:
    table = read_table(info.url)
    names = info.class_names
    if info.target == "multi":
        return {
            s.rsplit("/", 1)[1]: {names[i] for i in ids}
            for s, ids in zip(table["source"].to_pylist(), table["labels"].to_pylist(), strict=False)
        }
    sources, labels = table["source"].to_pylist(), table["label"].to_pylist()
    return {s.rsplit("/", 1)[1]: names[i] for s, i in zip(sources, labels, strict=True)}


# --- in-process: the data source through the real client ---------------------------------------


def test_competition_all_files(source, standin, tmp_path):
    standin.add_competition("cats-dogs", class_folders())
    info, _ = acquire(source, {"competition": "cats-dogs"}, tmp_path)
    assert info.class_counts == {"cat": 3, "dog": 3} and info.rows == 6
    assert info.report["downloads"] == [
        {
            "file": "cats-dogs",
            "saved_as": "cats-dogs.zip",
            "status": "downloaded",
            "bytes": len(standin.competitions["cats-dogs"].archive.data),
        }
    ]
    assert [c["method"] for c in standin.calls()] == ["ListDataFiles", "DownloadDataFiles", "GET"]
    assert all(c["auth"] == "basic" for c in standin.calls() if c["method"] != "GET")


def test_severstal_competition_labels_per_image(source, standin, tmp_path):
    files, expected = severstal()
    standin.add_competition(COMP, files)
    info, _ = acquire(source, {"competition": COMP, "layout": SEVERSTAL_LAYOUT}, tmp_path)
    assert info.target == "multi" and info.class_names == ["1", "2", "3", "4"]
    assert labels_by_image(info) == expected  # test_images/ and sample_submission.csv are not training data
    any_info, _ = acquire(
        source,
        {
            "competition": COMP,
            "layout": {**SEVERSTAL_LAYOUT, "target": "any", "positive": "defect", "negative": "no_defect"},
        },
        tmp_path,
        "store-any",
    )
    assert labels_by_image(any_info) == {n: "defect" if s else "no_defect" for n, s in expected.items()}


def test_one_file_of_a_competition(source, standin, tmp_path):
    images = {f"pics/{i}.jpg": jpeg(i) for i in range(4)}
    standin.add_competition(
        "tabular",
        {
            "labels.csv": b"file,kind\n0.jpg,a\n1.jpg,b\n2.jpg,a\n3.jpg,b\n",
            "pics.zip": zip_of(images),
            "sample_submission.csv": b"x\n",
        },
    )
    layout = {"kind": "table", "table": "labels.csv", "image_column": "file", "label_column": "kind", "images": "pics"}
    info, _ = acquire(
        source, {"competition": "tabular", "files": ["labels.csv", "pics.zip"], "layout": layout}, tmp_path
    )
    assert labels_by_image(info) == {"0.jpg": "a", "1.jpg": "b", "2.jpg": "a", "3.jpg": "b"}
    asked = [c["body"].get("fileName") for c in standin.calls("DownloadDataFile")]
    assert asked == ["labels.csv", "pics.zip"] and not standin.calls("DownloadDataFiles")
    with pytest.raises(
        DataError,
        match="data.source.files: 'train.csv' is not a file of competition 'tabular'; "
        "files are labels.csv, pics.zip, sample_submission.csv",
    ):
        acquire(source, {"competition": "tabular", "files": ["train.csv"]}, tmp_path, "other")


def test_dataset(source, standin, tmp_path):
    standin.add_dataset("someone/flowers", {"daisy/1.jpg": jpeg(1), "daisy/2.jpg": jpeg(2), "rose/3.jpg": jpeg(3)})
    info, _ = acquire(source, {"dataset": "someone/flowers"}, tmp_path)
    assert info.class_counts == {"daisy": 2, "rose": 1}
    assert standin.calls("DownloadDataset")[0]["body"] == {"ownerSlug": "someone", "datasetSlug": "flowers"}
    assert (tmp_path / "downloads" / "datasets" / "someone" / "flowers" / "all" / "flowers.zip").is_file()


def test_unchanged_remote_files_are_not_downloaded_again(source, standin, tmp_path):
    standin.add_competition("cats-dogs", class_folders())
    first, fp1 = acquire(source, {"competition": "cats-dogs"}, tmp_path, "a")
    archive = tmp_path / "downloads" / "competitions" / "cats-dogs" / "all" / "cats-dogs.zip"
    before = archive.stat()
    second, fp2 = acquire(source, {"competition": "cats-dogs", "on_bad_image": "skip"}, tmp_path, "b")
    assert fp1 == fp2
    assert second.report["downloads"][0]["status"] == "unchanged"
    after = archive.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    standin.update_competition_file("cats-dogs", "dog/9.jpg", jpeg(42))  # a new version, published now
    third, fp3 = acquire(source, {"competition": "cats-dogs"}, tmp_path, "c")
    assert fp3 != fp1 and third.report["downloads"][0]["status"] == "downloaded"
    assert third.class_counts == {"cat": 3, "dog": 4}


@pytest.mark.parametrize(
    "scenario, message",
    [
        ("bad-key", r"data.source: Kaggle rejected the credentials from KAGGLE_USERNAME/KAGGLE_KEY \(HTTP 401\)"),
        (
            "rules",
            r"data.source.competition: accept the competition rules at "
            r"https://www.kaggle.com/competitions/cats-dogs/rules and run again \(HTTP 403\)",
        ),
        ("unknown", r"data.source.competition: unknown competition 'no-such-comp' on Kaggle \(HTTP 404\)"),
        ("unknown-dataset", r"data.source.dataset: unknown dataset 'nobody/nothing' on Kaggle \(HTTP 404\)"),
        (
            "private-dataset",
            r"data.source.dataset: no access to dataset 'someone/secret' \(HTTP 403\): it is private, "
            r"or its terms must be accepted at https://www.kaggle.com/datasets/someone/secret",
        ),
    ],
)
def test_http_errors_are_one_line_data_errors(source, standin, tmp_path, monkeypatch, scenario, message):
    standin.add_competition("cats-dogs", class_folders(), rules_accepted=scenario != "rules")
    params = {"competition": "no-such-comp" if scenario == "unknown" else "cats-dogs"}
    if scenario == "unknown-dataset":
        params = {"dataset": "nobody/nothing"}
    if scenario == "private-dataset":
        standin.add_dataset("someone/secret", class_folders(), private=True)
        params = {"dataset": "someone/secret"}
    key = standin.key
    if scenario == "bad-key":
        key = "wrong-" + standin.key[6:]  # the key in use is the one that must not leak
        monkeypatch.setenv("KAGGLE_KEY", key)
    with pytest.raises(DataError, match=message) as caught:
        acquire(source, params, tmp_path)
    assert not isinstance(caught.value, TransientDataError)
    assert "\n" not in str(caught.value)
    assert not find_leaks(secret_forms(username=standin.username, key=key), [], {"the error": str(caught.value)})


def test_server_errors_and_dropped_connections_are_transient(source, standin, tmp_path):
    standin.add_competition("cats-dogs", class_folders())
    standin.fail["DownloadDataFiles"] = [503, 429]
    with pytest.raises(TransientDataError, match="Kaggle answered HTTP 503 for competition 'cats-dogs'"):
        acquire(source, {"competition": "cats-dogs"}, tmp_path, "a")
    with pytest.raises(TransientDataError, match="Kaggle answered HTTP 429 for competition 'cats-dogs'"):
        acquire(source, {"competition": "cats-dogs"}, tmp_path, "a2")
    info, _ = acquire(source, {"competition": "cats-dogs"}, tmp_path, "b")  # the next attempt succeeds
    assert info.rows == 6
    standin.stop()  # nothing listens on the proxy port any more
    with pytest.raises(TransientDataError, match="Kaggle could not be reached"):
        acquire(source, {"competition": "cats-dogs"}, tmp_path, "c")


def big_competition(standin: KaggleStandIn, name: str) -> bytes:
    """Class folders plus 2.5 MiB of incompressible bytes: the client writes 1 MiB chunks."""
    standin.add_competition(name, {**class_folders(2), "noise.bin": os.urandom(5 * 2**19)})
    return standin.competitions[name].archive.data


def test_truncated_transfer_resumes_with_range(source, standin, tmp_path):
    archive = big_competition(standin, "big")
    standin.truncate_once["/blobs/c/big/big.zip"] = 3 * 2**19  # the connection drops after 1.5 MiB
    info, _ = acquire(source, {"competition": "big"}, tmp_path)
    gets = standin.calls("GET")
    assert len(gets) == 2 and gets[0]["range"] is None and gets[1]["range"] == f"bytes={2**20}-"
    saved = tmp_path / "downloads" / "competitions" / "big" / "all" / "big.zip"
    assert saved.read_bytes() == archive and info.rows == 4
    assert not saved.with_name("big.zip.kaggle-partial").exists()


KILLABLE = """
import json, sys
from pathlib import Path
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.validation import plugin_params
source = PluginHost(env={}).sources.get("kaggle")
params = plugin_params(source, json.loads(sys.argv[1]), "data.source")
list(source.load(params, Path(sys.argv[2])))
"""


def test_a_download_killed_midway_resumes_on_the_next_run(source, standin, tmp_path):
    archive = big_competition(standin, "big")
    standin.stall["/blobs/c/big/big.zip"] = 2**21  # 2 MiB, then the server hangs
    params = {"competition": "big", "download_dir": str(tmp_path / "downloads")}
    (tmp_path / "w").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, json.dumps(params), str(tmp_path / "w")],
        cwd=ROOT,
        env={**os.environ, **standin.env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = tmp_path / "downloads" / "competitions" / "big" / "all" / "big.zip"
    try:
        assert standin.stalled.wait(120), "the client never started the download"
        deadline = time.monotonic() + 30
        while not (saved.exists() and saved.stat().st_size >= 2**20) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    standin.release.set()
    partial = saved.stat().st_size
    assert 0 < partial < len(archive) and saved.with_name("big.zip.kaggle-partial").exists()
    info, _ = acquire(source, {"competition": "big"}, tmp_path)
    assert standin.calls("GET")[-1]["range"] == f"bytes={partial}-"
    assert info.report["downloads"][0]["status"] == "resumed"
    assert saved.read_bytes() == archive and info.rows == 4


def test_zip_slip_archive_is_refused(source, standin, tmp_path):
    standin.add_competition(
        "slip",
        {"cat/1.jpg": b""},
        archive=zip_of({"cat/1.jpg": jpeg(1), "dog/2.jpg": jpeg(2), "../../evil.sh": b"rm -rf"}),
    )
    with pytest.raises(DataError, match=r"archive slip.zip: member '../../evil.sh' points outside the extraction"):
        acquire(source, {"competition": "slip"}, tmp_path)
    assert not list(tmp_path.rglob("evil.sh"))
    assert not (tmp_path / "work-store" / "data" / "cat").exists() and not (tmp_path / "store").exists()


def test_corrupt_zip_is_refused(source, standin, tmp_path):
    good = zip_of(class_folders())
    standin.add_competition("broken", {"cat/1.jpg": b""}, archive=good[: len(good) // 2])
    with pytest.raises(DataError, match="archive broken.zip is corrupt"):
        acquire(source, {"competition": "broken"}, tmp_path)
    assert not (tmp_path / "work-store" / "data" / "cat").exists() and not (tmp_path / "store").exists()


def test_credentials_from_kaggle_json_a_token_or_nowhere(source, standin, tmp_path, monkeypatch):
    standin.add_competition("cats-dogs", class_folders(1))
    params = plugin_params(source, {"competition": "cats-dogs"}, "data.source")
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config = tmp_path / "kaggle-config" / "kaggle.json"
    config.write_text(json.dumps({"username": standin.username, "key": standin.key}))
    source.fingerprint(params)
    monkeypatch.setenv("KAGGLE_API_TOKEN", standin.token)
    source.fingerprint(params)
    assert [c["auth"] for c in standin.calls("ListDataFiles")] == ["basic", "bearer"]
    monkeypatch.delenv("KAGGLE_API_TOKEN")
    config.unlink()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(DataError, match="data.source: no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY"):
        source.check(params)
    secret_params = {**params, "secret_block": "kaggle-creds"}
    source.check(secret_params)  # resolved by the flows, not here
    with pytest.raises(
        DataError, match="data.source.secret_block: Prefect Secret block 'kaggle-creds' was not resolved here"
    ):
        source.fingerprint(secret_params)


# --- through Prefect and the CLI ---------------------------------------------------------------


def test_the_leak_check_finds_each_form_of_a_credential(tmp_path):
    """The check below can fail: an Authorization header's base64 in a file, a token in a log line."""
    forms = secret_forms(username="someone", key="KGLKEY0123456789", token="KGAT_abcdef0123")
    (tmp_path / "debug.log").write_text("send: Authorization: Basic c29tZW9uZTpLR0xLRVkwMTIzNDU2Nzg5\n")
    (tmp_path / "clean.json").write_text('{"secret_block": "kaggle-creds"}')
    found = find_leaks(forms, written_files(tmp_path), {"log": "Bearer KGAT_abcdef0123", "ok": "nothing here"})
    assert found == [f"HTTP Basic base64(username:key) in {tmp_path / 'debug.log'}", "token in log"]


def test_error_details_are_scrubbed_of_every_form_of_the_credentials():
    from graftflow.core.secrets import redact
    from graftflow.plugins.sources.kaggle import Credentials

    creds = Credentials("KAGGLE_USERNAME/KAGGLE_KEY", username="someone", key="KGLKEY0123456789")
    detail = redact(
        "401 for http://localhost/api/v1/x (Authorization: Basic c29tZW9uZTpLR0xLRVkwMTIzNDU2Nzg5)", creds.secrets()
    )
    assert detail == "401 for http://localhost/api/v1/x (Authorization: Basic ***)"


def harness_db() -> list[Path]:
    """The SQLite files of the session's Prefect test server (prefect_test_harness)."""
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    return sqlite_files(PREFECT_SERVER_DATABASE_CONNECTION_URL.value())


def harness_records() -> dict[str, str]:
    """Flow and task run parameters, logs and artifacts on the session's Prefect test server."""
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL

    APILogWorker.drain_all(
        timeout=30
    )  # the flow's logs travel to the server in the background: send what is queued first
    records = server_records(PREFECT_API_URL.value())
    assert any(k.startswith("logs/") for k in records) and any(k.startswith("flow_runs/") for k in records)
    return records


def prefect_artifacts() -> list:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_artifacts()


@pytest.mark.slow
@pytest.mark.parametrize("held", ["username-key", "token"])
def test_secret_block_credentials_through_the_acquire_flow(
    prefect_harness, source, standin, tmp_path, monkeypatch, held
):
    from prefect.blocks.system import Secret

    from graftflow.core.config import parse_config
    from graftflow.pipelines.flows import acquire as acquire_flow

    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    if held == "token":
        Secret(value=standin.token).save("graft-kaggle-test", overwrite=True)
        forms, auth = secret_forms(token=standin.token), "bearer"
    else:
        Secret(value={"username": standin.username, "key": standin.key}).save("graft-kaggle-test", overwrite=True)
        forms, auth = secret_forms(username=standin.username, key=standin.key), "basic"
    standin.add_competition("cats-dogs", class_folders())
    config = parse_config(
        {
            "name": "secret",
            "artifact_root": str(tmp_path / "runs"),
            "data": {
                "cache_dir": str(tmp_path / "datasets"),
                "image_size": 8,
                "source": {
                    "kind": "kaggle",
                    "competition": "cats-dogs",
                    "secret_block": "graft-kaggle-test",
                    "download_dir": str(tmp_path / "downloads"),
                },
            },
        }
    )
    result = acquire_flow(config=config)
    summary = json.loads((Path(result["url"]).parent / "summary.json").read_text())
    assert summary["data"]["rows"] == 6 and summary["config"]["data"]["source"]["secret_block"] == "graft-kaggle-test"
    assert {c["auth"] for c in standin.calls() if c["method"] != "GET"} == {auth}
    # the block's value is stored encrypted in the server's database: not a single form of it in plain text
    assert_no_leak(forms, written_files(tmp_path) + harness_db(), harness_records())
    assert any(a.key == "secret-dataset-card" and "cats-dogs" in str(a.data) for a in prefect_artifacts())
    missing = config.model_copy(deep=True)
    missing.data.source = type(config.data.source).model_validate(
        {**config.data.source.model_dump(), "secret_block": "no-such-block"}
    )
    with pytest.raises(
        DataError, match="data.source.secret_block: there is no Prefect Secret block named 'no-such-block'"
    ):
        acquire_flow(config=missing)


def steel_config(tmp_path: Path, **layout) -> Path:
    path = tmp_path / "steel.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "steel",
                "artifact_root": str(tmp_path / "runs"),
                "data": {
                    "cache_dir": str(tmp_path / "datasets"),
                    "image_size": 16,
                    "retries": 2,
                    "retry_delay": 0.2,
                    "source": {
                        "kind": "kaggle",
                        "competition": COMP,
                        "download_dir": str(tmp_path / "downloads"),
                        "on_bad_image": "skip",
                        "layout": {**SEVERSTAL_LAYOUT, **layout},
                    },
                },
            }
        )
    )
    return path


def newest_summary(tmp_path: Path) -> dict:
    runs = [p for p in (tmp_path / "runs" / "steel").iterdir() if not p.name.startswith("_")]  # not _cache/
    run = max(runs, key=lambda p: p.stat().st_mtime)
    return json.loads((run / "summary.json").read_text())


@pytest.mark.slow
def test_severstal_through_graft_run(prefect_api, standin, tmp_path):
    """`graft run --stages acquire`: a 503 and a 429 retried by Prefect with exponential back-off, labels per image,
    skip-unchanged, cache hit, no leak."""
    files, expected = severstal()
    files["train_images/0bad.jpg"] = b"\xff\xd8 not really a jpeg"
    standin.add_competition(COMP, files)
    standin.fail["DownloadDataFiles"] = [503, 429]  # a server error, then "too many requests"
    config = steel_config(tmp_path)
    env = {**standin.env(), "KAGGLE_CONFIG_DIR": str(tmp_path / "kaggle-config")}
    outputs = []

    first = graft("run", str(config), "--stages", "acquire", env=env)
    outputs += [first.stdout, first.stderr]
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Traceback" not in first.stderr and "Retry 1/2" in first.stderr and "Retry 2/2" in first.stderr
    assert f"data: {len(expected)} images, 4 classes (multi) → " in first.stdout
    attempts = [c["at"] for c in standin.calls("DownloadDataFiles")]
    assert len(attempts) == 3  # the 503, the 429, then the retry that succeeds
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4, gaps  # data.retry_delay 0.2 s, doubled for the second retry
    data = newest_summary(tmp_path)["data"]
    assert data["cache_hit"] is False and data["target"] == "multi" and data["classes"] == 4
    assert data["rows"] == len(expected) and Path(data["path"]).is_dir()
    assert data["report"]["bad_images"] == {"missing": 0, "unreadable": 1, "first": ["0bad.jpg"]}
    assert data["report"]["downloads"][0]["status"] == "downloaded"
    from graftflow.core.data.store import read_info

    assert labels_by_image(read_info(data["path"])) == expected
    run_dir = Path(data["path"])
    card = (
        next(p for p in (tmp_path / "runs" / "steel").iterdir() if not p.name.startswith("_"))
        / "acquire"
        / "dataset_card.md"
    )
    text = card.read_text()
    assert all(f"| {name} | {n} |" in text for name, n in data["class_counts"].items()) and "16×8" in text
    assert "1 unreadable; first: 0bad.jpg" in text and "![samples](samples.png)" in text

    second = graft("run", str(config), "--stages", "acquire", "--set", "data.source.layout.target=any", env=env)
    outputs += [second.stdout, second.stderr]
    assert second.returncode == 0, second.stderr[-3000:]
    data = newest_summary(tmp_path)["data"]
    assert data["cache_hit"] is False and data["class_counts"] == {
        "negative": sum(not s for s in expected.values()),
        "positive": sum(bool(s) for s in expected.values()),
    }
    assert data["report"]["downloads"][0]["status"] == "unchanged"
    assert "is unchanged since the last download" in second.stderr + second.stdout

    calls = len(standin.calls())
    third = graft("run", str(config), "--stages", "acquire", "--set", "data.source.layout.target=any", env=env)
    outputs += [third.stdout, third.stderr]
    assert third.returncode == 0, third.stderr[-3000:]
    assert newest_summary(tmp_path)["data"]["cache_hit"] is True and ", cache hit → " in third.stdout
    assert [c["method"] for c in standin.calls()[calls:]] == ["ListDataFiles"]  # the fingerprint, nothing more
    assert run_dir.is_dir()
    texts = {f"output #{i}": text for i, text in enumerate(outputs)} | server_records(os.environ["PREFECT_API_URL"])
    # the runs, stores and downloads, and the server's database and log
    files = written_files(tmp_path, prefect_api.parent)
    assert_no_leak(secret_forms(username=standin.username, key=standin.key), files, texts)


USER_ERRORS = [
    (
        "bad-key",
        "error: data.source: Kaggle rejected the credentials from KAGGLE_USERNAME/KAGGLE_KEY (HTTP 401); "
        "check the username and key (or the API token)",
    ),
    (
        "bad-token",
        "error: data.source: Kaggle rejected the credentials from KAGGLE_API_TOKEN (HTTP 401); "
        "check the username and key (or the API token)",
    ),
    (
        "rules",
        f"error: data.source.competition: accept the competition rules at "
        f"https://www.kaggle.com/competitions/{COMP}/rules and run again (HTTP 403)",
    ),
    ("unknown", f"error: data.source.competition: unknown competition '{COMP}' on Kaggle (HTTP 404)"),
]


def user_error_setup(standin: KaggleStandIn, tmp_path: Path, scenario: str) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of a run that meets `scenario`, and every form of the credentials it sends."""
    if scenario != "unknown":
        standin.add_competition(COMP, severstal(4)[0], rules_accepted=scenario != "rules")
    env = {**standin.env(), "KAGGLE_CONFIG_DIR": str(tmp_path / "kaggle-config")}
    if scenario == "bad-key":
        env["KAGGLE_KEY"] = "wrong-" + standin.key[6:]  # rejected: the 401 path, with this key in the request
    if scenario == "bad-token":
        del env["KAGGLE_USERNAME"], env["KAGGLE_KEY"]
        env["KAGGLE_API_TOKEN"] = "KGAT_" + standin.token[5:][::-1]
        return env, secret_forms(token=env["KAGGLE_API_TOKEN"])
    return env, secret_forms(username=env["KAGGLE_USERNAME"], key=env["KAGGLE_KEY"])


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.slow
@pytest.mark.parametrize("scenario, message", USER_ERRORS)
def test_user_errors_exit_2_without_traceback(
    prefect_harness, standin, tmp_path, monkeypatch, capsys, scenario, message
):
    """`graft run` in this process (the session's Prefect test server): exit 2, one `error:` line, Prefect's
    task and flow loggers get the failure without a traceback (the console script is checked below), and the
    credentials in use — on the 401 paths the rejected ones — are nowhere: not in the output, the log
    records, any file written, the server's database, nor its run parameters, logs and artifacts."""
    import graftflow.pipelines.flows  # noqa: F401  (its import finishes Prefect's logging set-up, which resets handlers)
    from graftflow.pipelines.cli import main

    env, forms = user_error_setup(standin, tmp_path, scenario)
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    seen = _Records()
    loggers = [logging.getLogger(name) for name in ("prefect.task_runs", "prefect.flow_runs")]
    for logger in loggers:
        logger.addHandler(seen)
    try:
        code = main(["run", str(steel_config(tmp_path)), "--stages", "acquire"])
    finally:
        for logger in loggers:
            logger.removeHandler(seen)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err[-3000:]
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [message]
    failures = [r for r in seen.records if r.levelno >= logging.ERROR]
    assert failures and all(r.exc_info is None and not r.exc_text for r in failures)
    assert any(message.removeprefix("error: ") in r.getMessage() for r in failures)
    assert not any("Retry 1/" in r.getMessage() for r in seen.records)  # a user error is not retried
    assert not (tmp_path / "datasets").exists() or not list((tmp_path / "datasets").iterdir())
    if scenario.startswith("bad-"):
        assert {c["auth"] for c in standin.calls()} == {None}  # the stand-in did see these credentials, and refused
    texts = {"stdout": captured.out, "stderr": err} | {f"log #{i}": r.getMessage() for i, r in enumerate(seen.records)}
    assert_no_leak(forms, written_files(tmp_path) + harness_db(), texts | harness_records())


@pytest.mark.slow
def test_the_console_script_reports_a_user_error_in_one_line(prefect_api, standin, tmp_path):
    scenario, message = USER_ERRORS[2]
    proc = graft(
        "run", str(steel_config(tmp_path)), "--stages", "acquire", env=user_error_setup(standin, tmp_path, scenario)[0]
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")] == [message]
    assert "Traceback" not in proc.stderr + proc.stdout
