"""Helpers shared by tests and benchmarks."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def crash_at_step(monkeypatch, step: int, stage: str, *stage_args) -> Iterator[None]:
    """Runs `stage` (`execute_stage(stage, *stage_args)`) with training step `step` raising "simulated
    crash", checks that it crashed, and gives the block the crashed run before the real step comes back:
    a crash between checkpoints, without a signal, for the resume-to-identical-weights tests."""
    import pytest

    from graftflow.core.stages.base import execute_stage
    from graftflow.core.training import loop

    real = loop.GradientStep.accumulate

    def crashing(self, step_fn, images, labels, micro):
        if self.history.steps + 1 == step:
            raise RuntimeError("simulated crash")
        return real(self, step_fn, images, labels, micro)

    monkeypatch.setattr(loop.GradientStep, "accumulate", crashing)
    try:
        with pytest.raises(RuntimeError, match="simulated crash"):
            execute_stage(stage, *stage_args)
        yield
    finally:
        monkeypatch.setattr(loop.GradientStep, "accumulate", real)
