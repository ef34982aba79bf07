"""Issue 9: ten runs submitted at once to one real Prefect server (SQLite, the session's shared one) all complete."""

import json
import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.prefect_server import BIN
from tests.support import DIGITS, ROOT

pytestmark = pytest.mark.slow


def test_ten_concurrent_runs_on_one_sqlite_server(prefect_api, tmp_path):
    tag = f"load-{uuid.uuid4().hex[:6]}"  # the shared server holds other tests' runs too
    procs = []
    for i in range(10):
        args = [
            "run",
            str(DIGITS),
            "--set",
            f"artifact_root={tmp_path / 'runs'}",
            "--set",
            f"name={tag}-{i}",
            "--set",
            f"data.cache_dir={tmp_path / 'ds' / str(i)}",
            "--set",
            "data.image_size=8",
            "--set",
            f"seed={i}",
            "--stages",
            "acquire",
        ]
        procs.append(
            subprocess.Popen(
                [str(BIN / "graft"), *args],
                env=dict(os.environ),
                cwd=ROOT,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    outputs = [p.communicate(timeout=900)[0] for p in procs]
    failed = [(i, o[-1500:]) for i, (p, o) in enumerate(zip(procs, outputs, strict=False)) if p.returncode != 0]
    assert not failed, failed
    api = os.environ["PREFECT_API_URL"]
    runs = httpx.post(
        f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"like_": tag}}, "limit": 200}, timeout=30
    ).json()
    states = sorted(r["state_type"] for r in runs)
    assert states == ["COMPLETED"] * 20, states  # 10 transfer runs + their 10 acquire subflows, all on the server
    for i in range(10):
        summary = json.loads(next(Path(tmp_path / "runs" / f"{tag}-{i}").glob("*/summary.json")).read_text())
        assert summary["stages"]["acquire"]["status"] == "completed"
