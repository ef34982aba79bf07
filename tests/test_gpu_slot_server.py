"""Against the session's shared Prefect server: with a GPU limit of 1, two runs' training never overlaps.

Both runs try hard to overlap: an observer plugin (graft_on_stage_start) holds each run at the start of
its fine-tuning until the other run is fine-tuning too, or until GRACE_SECONDS after the other run became
ready for the slot (its acquire ended; no fixed timeout from the start, so load cannot decide it); without
a slot nothing can keep the other away, so there it waits for the other however long that takes. With the slot
(`gpu_slot.hold: always`) the second run cannot start fine-tuning while the first holds the slot, so
neither ever meets the other and the training stages never overlap. The negative control is the very
same pair with `gpu_slot.hold: never`: they meet, and their fine-tuning overlaps.
"""

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
# After the other run is ready for the slot (its acquire ended), how long it may take to start fine-tuning
# when nothing holds it back: a skipped pretrain stage and a task run or two, on a loaded 2-core machine.
GRACE_SECONDS = 20

MEETING = f'''
"""Holds a run at the start of fine-tuning until the other run is fine-tuning too. Without a slot that
happens soon after the other run's acquire ends; it gives up {GRACE_SECONDS} s after that end (when the
other can only be waiting for the slot), so start-up skew between the runs cannot decide the outcome."""
import json, os, time
from pathlib import Path
from graftflow.core import hookimpl

ROOM = Path(os.environ["GRAFT_MEETING_ROOM"])


@hookimpl
def graft_on_stage_start(run, stage):
    if stage != "finetune":
        return
    (ROOM / run.name).touch()
    other = "slot-b" if run.name == "slot-a" else "slot-a"
    ready, met = ROOM / f"{{other}}.ready", []
    grace = float(os.environ["GRAFT_MEETING_GRACE"])  # inf without a slot: nothing can keep the other away
    deadline = time.monotonic() + 600  # only so that a broken run cannot hang the test
    while time.monotonic() < deadline:
        if (ROOM / other).exists():
            met = [other]
            break
        if ready.exists() and time.time() - ready.stat().st_mtime > grace:
            break
        time.sleep(0.05)
    (ROOM / f"{{run.name}}.json").write_text(json.dumps({{"met": met}}))


@hookimpl
def graft_on_stage_end(run, stage, status, seconds, outputs):
    if stage == "acquire":
        (ROOM / f"{{run.name}}.ready").touch()  # next: the slot for pretrain, then fine-tuning
    if stage == "finetune":
        (ROOM / run.name).unlink(missing_ok=True)
'''


def intervals(summary: dict) -> list[tuple[datetime, datetime]]:
    return [
        (datetime.fromisoformat(e["started"]), datetime.fromisoformat(e["ended"]))
        for s, e in summary["stages"].items()
        if s in TRAINING
    ]


def start_pair(tmp_path: Path, hold: str, limit: str, env: dict) -> list[subprocess.Popen]:
    room = tmp_path / hold / "room"
    room.mkdir(parents=True)
    (tmp_path / hold / "meeting.py").write_text(MEETING)
    procs = []
    for name in ("a", "b"):
        sets = [
            f"name=slot-{name}",
            f"artifact_root={tmp_path / hold / name}",
            f"data.cache_dir={tmp_path / hold / name / 'ds'}",
            f"plugins=[{tmp_path / hold / 'meeting.py'}]",
            "data.image_size=8",
            "data.num_workers=0",
            "pretrain.enabled=false",  # the stage still runs (and is skipped) inside the slot
            "finetune.freeze_epochs=0",
            "finetune.epochs=1",
            "augment.preview=0",
            "export.formats=[safetensors]",
            f"gpu_slot.hold={hold}",
            f"gpu_slot.name={limit}",
        ]
        procs.append(
            subprocess.Popen(
                [str(BIN / "graft"), "run", "-v", str(DIGITS), *(a for s in sets for a in ("--set", s))],
                env={
                    **env,
                    "GRAFT_MEETING_ROOM": str(room),
                    "GRAFT_MEETING_GRACE": str(GRACE_SECONDS) if hold == "always" else "inf",
                    "OMP_NUM_THREADS": "1",  # 4 processes, 2 cores
                },
                cwd=ROOT,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def finish(tmp_path: Path, hold: str, procs: list[subprocess.Popen]) -> tuple[list[str], list, list[list]]:
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    summaries = [json.loads(next((tmp_path / hold / n).glob("*/*/summary.json")).read_text()) for n in ("a", "b")]
    met = [json.loads((tmp_path / hold / "room" / f"slot-{n}.json").read_text())["met"] for n in ("a", "b")]
    return outputs, [intervals(s) for s in summaries], met


def overlaps(a: list, b: list) -> list:
    return [(x, y) for x in a for y in b if x[0] < y[1] and y[0] < x[1]]


def test_two_runs_queue_for_the_gpu_slot(prefect_api, tmp_path):
    env = dict(os.environ)  # PREFECT_API_URL: the shared server
    limit = f"gpu-{uuid.uuid4().hex[:8]}"  # this test's own limit on the shared server
    created = prefect("gcl", "create", limit, "--limit", "1", env=env)
    assert created.returncode == 0, created.stdout + created.stderr
    # both pairs at once: each pair's runs start together; only the first pair queues on the limit
    slotted, free = start_pair(tmp_path, "always", limit, env), start_pair(tmp_path, "never", limit, env)
    outputs, (a, b), met = finish(tmp_path, "always", slotted)
    assert len(a) == len(b) == 4
    assert met == [[], []], "a run fine-tuned while the other held the slot"
    assert not overlaps(a, b), overlaps(a, b)
    assert any(f"taking a slot of global concurrency limit '{limit}'" in o for o in outputs)
    # the negative control: without the slot the same two runs meet and their training overlaps
    outputs, (a, b), met = finish(tmp_path, "never", free)
    assert met == [["slot-b"], ["slot-a"]]
    assert overlaps(a, b)
    assert not any("taking a slot" in o for o in outputs)
