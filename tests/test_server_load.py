"""Issue 9: ten runs submitted at once to one real Prefect server (SQLite) all complete."""

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.prefect_server import BIN, prefect_server
from tests.support import DIGITS, ROOT

pytestmark = pytest.mark.slow


def test_ten_concurrent_runs_on_one_sqlite_server(tmp_path):
    with prefect_server(tmp_path) as env:
        procs = []
        for i in range(10):
            args = ["run", str(DIGITS), "--set", f"artifact_root={tmp_path / 'runs'}", "--set", f"name=load-{i}",
                    "--set", f"data.cache_dir={tmp_path / 'ds' / str(i)}", "--set", "data.image_size=8",
                    "--set", f"seed={i}", "--stages", "acquire"]
            procs.append(subprocess.Popen([str(BIN / "graft"), *args], env=env, cwd=ROOT, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        outputs = [p.communicate(timeout=900)[0] for p in procs]
        failed = [(i, o[-1500:]) for i, (p, o) in enumerate(zip(procs, outputs)) if p.returncode != 0]
        assert not failed, failed
        api = env["PREFECT_API_URL"]
        runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=30).json()
    states = sorted(r["state_type"] for r in runs)
    assert states == ["COMPLETED"] * 20, states  # 10 transfer runs + their 10 acquire subflows, all on the server
    for i in range(10):
        summary = json.loads(next(Path(tmp_path / "runs" / f"load-{i}").glob("*/summary.json")).read_text())
        assert summary["stages"]["acquire"]["status"] == "completed"
