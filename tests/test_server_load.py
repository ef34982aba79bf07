"""Issue 9: concurrent full runs against one real Prefect server (SQLite, the session's shared one) all complete.

Four `graft run`s of the whole chain start at once (acquire → augment → pretrain → finetune → evaluate →
export: 28 flow runs with their task runs, logs and artifacts), sharing one data cache folder, so they also
race to build the same content-addressed store. Compute is kept tiny (two classes, 8 px, one epoch): what
is loaded is the server and the shared folders, not the CPU.
"""

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

RUNS = 4
STAGES = ["acquire", "augment", "pretrain", "finetune", "evaluate", "export"]
TINY = [
    "data.image_size=8",
    "data.num_workers=0",
    "augment.preview=0",
    "pretrain.classes=[0, 1]",
    "pretrain.epochs=1",
    "finetune.classes=[5, 6]",
    "finetune.freeze_epochs=0",
    "finetune.epochs=1",
    "export.formats=[safetensors]",
]


def test_concurrent_full_runs_on_one_sqlite_server(prefect_api, tmp_path):
    tag = f"load-{uuid.uuid4().hex[:6]}"  # the shared server holds other tests' runs too
    procs = []
    for i in range(RUNS):
        sets = [f"artifact_root={tmp_path / 'runs'}", f"name={tag}-{i}", f"data.cache_dir={tmp_path / 'ds'}"]
        args = ["run", str(DIGITS), *(a for o in [*sets, *TINY, f"seed={i}"] for a in ("--set", o))]
        procs.append(
            subprocess.Popen(
                [str(BIN / "graft"), *args],
                env={**os.environ, "OMP_NUM_THREADS": "1"},  # four processes on two cores: no spinning threads
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
    assert states == ["COMPLETED"] * (RUNS * (1 + len(STAGES))), states  # each transfer run and its six subflows
    stores = set()
    for i in range(RUNS):
        summary = json.loads(next(Path(tmp_path / "runs" / f"{tag}-{i}").glob("*/summary.json")).read_text())
        assert all(summary["stages"][s]["status"] == "completed" for s in STAGES), summary["stages"]
        assert summary["metrics"]["test"]["images"] > 0 and summary["exports"][0]["format"] == "safetensors"
        stores.add(summary["data"]["path"])
    assert len(stores) == 1  # one content-addressed store, whichever run published it
