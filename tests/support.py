"""Helpers shared by tests and benchmarks."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "pipelines" / "configs" / "digits.yaml"


def graft(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600, ephemeral: bool = False
) -> subprocess.CompletedProcess:
    """Run the real `graft` console script in a subprocess.

    `env` adds to (or, with None values, removes from) the test's environment.
    It talks to the server in PREFECT_API_URL when the test uses the `prefect_api` fixture;
    `ephemeral=True` makes it start its own temporary server, as `make run` does.
    """
    exe = Path(sys.executable).parent / "graft"
    full_env = {**os.environ, **(env or {})}  # a None value removes the variable
    full_env = {k: v for k, v in full_env.items() if v is not None}
    if ephemeral:
        full_env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=full_env, cwd=cwd or ROOT, timeout=timeout
    )


def run_dirs(pipeline_dir: Path) -> list[Path]:
    """The run folders of a pipeline (`_cache/` and other `_` entries are not runs)."""
    return sorted(p for p in pipeline_dir.iterdir() if p.is_dir() and not p.name.startswith("_"))


def untimed(metrics: dict) -> dict:
    """Metrics without wall times (`seconds`: the stage's, `epoch_seconds`: the reported epoch's), which
    differ between a resumed run and an uninterrupted one when everything else must be equal."""
    return {k: v for k, v in metrics.items() if not k.endswith("seconds")}
