"""Orchestration overhead as a user meets it: the demo through `graft run` vs the same stages as plain calls.

Both sides are fresh processes, timed from `exec` to exit, on the demo config (pipelines/configs/digits.yaml):

- `graft run CONFIG` — the console script: imports, config check, Prefect (the ephemeral server's
  start-up included, as `make run` pays it), the `transfer` flow and one subflow + task per stage,
  artifacts, shutdown;
- `python -m tests.benchmarks.plain_stages CONFIG` — the same config check and the same six stages
  through `execute_stage` in one process, no Prefect.

The difference of the two walls is what orchestration costs; target ≤ 5 s. Each repeat runs both in an
order that alternates (ABBA), each in its own fresh artifact and dataset folders; the figures are
medians. Prefect's home (its SQLite database) is made once per benchmark and kept, as a user's
`~/.prefect` is: its first migration is paid by a warm-up `graft run`, whose wall is recorded
(`first_run_wall_s`) but not compared. `--quick` shrinks the demo (8 px, one epoch per phase): the
overhead barely depends on compute. `--smoke` (the suite) also skips pretraining and runs against the
session's Prefect server (PREFECT_API_URL) instead of an ephemeral one.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.results import Result
from tests.support import DIGITS, ROOT

TARGET_SECONDS = 5.0


def _overrides(tmp: Path, quick: bool, smoke: bool) -> list[str]:
    sets = [f"artifact_root={tmp / 'runs'}", f"data.cache_dir={tmp / 'datasets'}"]
    if quick or smoke:
        sets += ["data.image_size=8", "pretrain.epochs=1", "finetune.epochs=1"]
    if smoke:
        sets += [
            "pretrain.enabled=false",
            "finetune.freeze_epochs=0",
            "finetune.classes=[5, 6]",
            "augment.train=[]",
            "export.formats=[safetensors]",
        ]
    return sets


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of a fresh process from start to exit, and its stdout; a failure is the benchmark's."""
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return wall, proc.stdout


def _graft_run(env: dict[str, str], quick: bool, smoke: bool) -> tuple[float, float]:
    """`graft run` in a fresh process: its wall and Σ of its stages' own seconds (summary.json)."""
    with tempfile.TemporaryDirectory(prefix="graft-bench-orch-") as tmp:
        sets = [a for s in _overrides(Path(tmp), quick, smoke) for a in ("--set", s)]
        wall, _ = _timed([str(Path(sys.executable).parent / "graft"), "run", str(DIGITS), *sets], env)
        (summary,) = Path(tmp, "runs").glob("*/*/summary.json")
        stages = json.loads(summary.read_text())["stages"]
    return wall, sum(e["seconds"] for e in stages.values())


def _plain(env: dict[str, str], quick: bool, smoke: bool) -> tuple[float, float]:
    """The same stages as plain calls in a fresh process without Prefect: its wall and Σ stage seconds."""
    with tempfile.TemporaryDirectory(prefix="graft-bench-plain-") as tmp:
        sets = [a for s in _overrides(Path(tmp), quick, smoke) for a in ("--set", s)]
        wall, out = _timed([sys.executable, "-m", "tests.benchmarks.plain_stages", str(DIGITS), *sets], env)
    return wall, sum(json.loads(out.strip().splitlines()[-1])["stage_seconds"].values())


def _environment(prefect_home: str, smoke: bool) -> dict[str, str]:
    env = {**os.environ, "PREFECT_HOME": prefect_home}
    if not smoke:  # what `make run` does: an ephemeral server of its own, not a server someone has running
        env.pop("PREFECT_API_URL", None)
    return env


def run(quick: bool = False, smoke: bool = False) -> list[Result]:
    repeats = 1 if smoke else 2 if quick else 6
    with tempfile.TemporaryDirectory(prefix="graft-bench-prefect-") as prefect_home:
        env = _environment(prefect_home, smoke)
        load_before = os.getloadavg()[0]
        # migrates the fresh PREFECT_HOME (a user's first run); the suite's server has one already
        first_wall = None if smoke else _graft_run(env, quick, smoke)[0]
        graft, plain = [], []
        for repeat in range(repeats):  # ABBA: neither side always runs first
            pair = [("graft", _graft_run), ("plain", _plain)]
            for side, fn in pair if repeat % 2 == 0 else pair[::-1]:
                (graft if side == "graft" else plain).append(fn(env, quick, smoke))
        load_after = os.getloadavg()[0]
    graft_wall = statistics.median(w for w, _ in graft)
    plain_wall = statistics.median(w for w, _ in plain)
    differences = [g - p for (g, _), (p, _) in zip(graft, plain, strict=True)]
    difference = statistics.median(differences)
    # The walls carry the stages' own compute, which swings by tens of seconds on a loaded machine; each
    # side's time outside its stages (wall − Σ stage seconds) does not, so their difference is recorded too.
    outside = [(g - gs) - (p - ps) for (g, gs), (p, ps) in zip(graft, plain, strict=True)]
    mode = "the session's Prefect server" if smoke else "an ephemeral Prefect server (started by graft run)"
    extra = {
        "graft_run_wall_s": [round(w, 3) for w, _ in graft],
        "plain_wall_s": [round(w, 3) for w, _ in plain],
        "difference_s": [round(d, 3) for d in differences],
        "graft_run_stage_seconds": [round(s, 3) for _, s in graft],
        "plain_stage_seconds": [round(s, 3) for _, s in plain],
        "outside_stages_difference_s": [round(d, 3) for d in outside],
        "outside_stages_difference_median_s": round(statistics.median(outside), 3),
        "first_run_wall_s": None if first_wall is None else round(first_wall, 3),
        "target_s": TARGET_SECONDS,
        "repeats": repeats,
        "loadavg_1min": [round(load_before, 2), round(load_after, 2)],
        "config": "demo" + (" (smoke)" if smoke else " (quick: 8 px, 1 epoch)" if quick else ""),
    }
    walls = Result(
        name="orchestration_graft_run_wall",
        value=round(graft_wall, 3),
        baseline=round(plain_wall, 3),
        unit="s",
        higher_is_better=False,
        notes=f"`graft run` on the {extra['config']} config in a fresh process, {mode}, vs the same stages as plain "
        f"calls in a fresh process without Prefect; {repeats} ABBA repeats, medians",
        extra=extra,
    )
    overhead = Result(
        name="orchestration_overhead",
        value=round(difference, 3),
        baseline=None,
        unit="s",
        higher_is_better=False,
        target_max=TARGET_SECONDS,
        notes=f"graft run wall {graft_wall:.1f} s − plain stages wall {plain_wall:.1f} s (medians of {repeats} "
        f"ABBA pairs; {mode}); outside the stages' own seconds the difference is "
        f"{statistics.median(outside):.1f} s; target ≤ {TARGET_SECONDS:g} s",
        extra={**extra, "graft_run_wall_median_s": round(graft_wall, 3), "plain_wall_median_s": round(plain_wall, 3)},
    )
    overhead.extra["target_met"] = overhead.met
    return [walls, overhead]
