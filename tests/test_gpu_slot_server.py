"""Against the session's shared Prefect server: with a GPU limit of 1, two runs' training never overlaps."""

import json
import os
import subprocess
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from tests.prefect_server import BIN, prefect
from tests.support import DIGITS, ROOT

pytestmark = pytest.mark.slow

TRAINING = ("pretrain", "finetune", "evaluate", "export")


def intervals(summary: dict) -> list[tuple[datetime, datetime]]:
    return [
        (datetime.fromisoformat(e["started"]), datetime.fromisoformat(e["ended"]))
        for s, e in summary["stages"].items()
        if s in TRAINING
    ]


def test_two_runs_queue_for_the_gpu_slot(prefect_api, tmp_path):
    env = dict(os.environ)  # PREFECT_API_URL: the shared server
    limit = f"gpu-{uuid.uuid4().hex[:8]}"  # this test's own limit on the shared server
    created = prefect("gcl", "create", limit, "--limit", "1", env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    procs = []
    for name in ("a", "b"):
        args = [
            "run",
            str(DIGITS),
            "--set",
            f"artifact_root={tmp_path / name}",
            "--set",
            f"data.cache_dir={tmp_path / name / 'ds'}",
            "--set",
            "data.image_size=8",
            "--set",
            "pretrain.epochs=2",
            "--set",
            "finetune.epochs=1",
            "--set",
            "augment.preview=0",
            "--set",
            "export.formats=[safetensors]",
            "--set",
            "gpu_slot.hold=always",
            "--set",
            f"gpu_slot.name={limit}",
        ]
        procs.append(
            subprocess.Popen(
                [str(BIN / "graft"), *args],
                env=env,
                cwd=ROOT,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    summaries = [json.loads(next(Path(tmp_path / n).glob("*/*/summary.json")).read_text()) for n in ("a", "b")]
    a, b = (intervals(s) for s in summaries)
    assert len(a) == len(b) == 4
    overlaps = [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]
    assert not overlaps, overlaps
    assert any(f"taking a slot of global concurrency limit '{limit}'" in o for o in outputs)
