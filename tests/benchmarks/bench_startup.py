"""Start-up: how long `graft` takes to answer where it has no work to do (issue 19: under 1 s each).

Each command runs in a fresh process, timed from `exec` to exit, REPEATS times; the figure is the median:

- `graft --help`;
- `graft plugins` — after one listing has filled the plugin index (core/plugin_index.py), as every
  listing after the first does while no plugin changes; the first, fresh discovery (which imports the
  plugins, hence torch) is recorded in `extra` as `fresh_discovery_s`;
- `graft run` on a config with a typo (`model.family: resnt`), which must end with one line and exit 2.

No baseline: these are ceilings (`target_max`, 1 s). `python -c pass` is in `extra` (`python_s`) for
scale: what the interpreter alone costs on this machine.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.benchmarks.results import Result
from tests.support import ROOT

TARGET_SECONDS = 1.0
TYPO = "name: typo\nmodel: {family: resnt, variant: tiny}\n"


def _wall(argv: list[str], env: dict[str, str], expect: int = 0) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    wall = time.perf_counter() - start
    if proc.returncode != expect:
        raise RuntimeError(f"{' '.join(argv[-3:])}: exit {proc.returncode}, expected {expect}: {proc.stderr[-1000:]}")
    return wall


def run(quick: bool = False, smoke: bool = False) -> list[Result]:
    repeats = 1 if smoke else 3 if quick else 7
    graft = str(Path(sys.executable).parent / "graft")
    with tempfile.TemporaryDirectory(prefix="graft-bench-startup-") as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        env.pop("GRAFT_PLUGIN_INDEX", None)
        typo = Path(tmp) / "typo.yaml"
        typo.write_text(TYPO)
        load = os.getloadavg()[0]
        fresh = _wall([graft, "plugins"], env)  # the first listing: a fresh discovery, saved in the index
        commands = {
            "help": ([graft, "--help"], 0),
            "plugins": ([graft, "plugins"], 0),
            "config_error": ([graft, "run", str(typo)], 2),
        }
        walls = {name: [] for name in commands}
        python = []
        for _ in range(repeats):
            python.append(_wall([sys.executable, "-c", "pass"], env))
            for name, (argv, code) in commands.items():
                walls[name].append(_wall(argv, env, code))
    results = []
    for name, samples in walls.items():
        value = statistics.median(samples)
        label = {"help": "graft --help", "plugins": "graft plugins", "config_error": "graft run <config with a typo>"}
        results.append(
            Result(
                name=f"startup_{name}",
                value=round(value, 3),
                baseline=None,
                unit="s",
                higher_is_better=False,
                target_max=TARGET_SECONDS,
                notes=f"`{label[name]}` in a fresh process, exec to exit, median of {repeats}; "
                f"python -c pass: {statistics.median(python):.2f} s; load {load:.1f}",
                extra={
                    "walls_s": [round(w, 3) for w in samples],
                    "python_s": round(statistics.median(python), 3),
                    "fresh_discovery_s": round(fresh, 3),
                    "loadavg_1min": round(load, 2),
                },
            )
        )
    return results
