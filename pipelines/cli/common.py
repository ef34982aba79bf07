"""What the commands share: the one-line error, config arguments, Prefect's defaults and log level,
the storage credentials, checking `--run-id`, the run summary."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from graftflow.core.errors import GraftError

if TYPE_CHECKING:
    from graftflow.core.config import PipelineConfig


def print_error(exc: GraftError) -> int:
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(f"error: {line}", file=sys.stderr)
    return exc.exit_code


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also show Prefect's own log (flow and task runs, states)"
    )


def credential_problems(config: PipelineConfig, held: ExitStack) -> list[str]:
    """`storage.secret_block` resolved before anything touches s3://, and held while the command runs."""
    from graftflow.pipelines.storage_credentials import storage_credentials

    try:
        held.enter_context(storage_credentials(config))
    except GraftError as exc:
        return [str(exc)]
    return []


def run_id_problems(config: PipelineConfig, run_id: str | None) -> list[str]:
    """`--run-id` must name a run that exists: continuing a typo would start an empty run instead."""
    from graftflow.core import storage
    from graftflow.core.runs import Run

    if run_id is None:
        return []
    try:
        if storage.exists(Run(config, run_id).summary_url):
            return []
    except Exception as exc:  # an unreachable store or missing credentials: say where
        return [f"--run-id: cannot read {config.artifact_root}: {type(exc).__name__}: {exc}"]
    pipeline = storage.join(config.artifact_root, config.name)
    runs = existing_runs(pipeline)
    listed = f"runs there: {', '.join(runs[-5:])}" if runs else "it has no runs yet"
    return [f"--run-id: there is no run '{run_id}' of '{config.name}' under {config.artifact_root} ({listed})"]


def existing_runs(pipeline_url: str) -> list[str]:
    """Run ids under a pipeline's folder, oldest first (`_cache/` and other `_` folders are not runs)."""
    from graftflow.core import storage

    fs, path = storage.filesystem(pipeline_url)
    try:
        entries = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return []
    names = [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if e.get("type") == "directory"]
    return sorted(n for n in names if not n.startswith(("_", ".")))


class _QuietPrefect(logging.Filter):
    """Without -v the terminal shows what a person acts on: warnings, what the data stages noticed
    (cache hits, unchanged downloads), and Prefect's retry notices; not Prefect's flow and task chatter
    nor the per-epoch and per-stage log lines the progress display already shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "prefect" or record.name.startswith("prefect."):
            return record.levelno >= logging.CRITICAL or _is_retry(record)
        if record.name == "graft.data" or record.name.startswith("graft.data."):
            return record.levelno >= logging.INFO
        return record.levelno >= logging.WARNING


def _is_retry(record: logging.LogRecord) -> bool:
    """Prefect's "Task run failed with ...: ... - Retry 1/3 will start in 5 second(s)": a passing failure."""
    return record.name.startswith("prefect.task_runs") and " - Retry " in record.getMessage()


def quiet_prefect_console(verbose: bool) -> None:
    """Filter the console handler Prefect installs (its records still reach the API and the UI)."""
    if verbose:
        return
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(
            isinstance(f, _QuietPrefect) for f in handler.filters
        ):
            handler.addFilter(_QuietPrefect())


def prefect_defaults() -> None:
    """Settings for the ephemeral server a CLI run starts; an explicit environment wins."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "graft")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # The ephemeral server's telemetry heartbeat races its own SQLite migrations ("database is locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh PREFECT_HOME migrates its SQLite database first: ~20 s on 2 busy cores, Prefect's default limit.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def print_stage_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)  # paths and numbers stay on one line for scripts that read them
    table = Table(title=f"run {summary['run_id']}")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    for stage, entry in summary.get("stages", {}).items():
        table.add_row(stage, entry.get("status", "?"), f"{entry.get('seconds', 0):.1f}")
    console.print(table)


def print_summary(summary: dict[str, Any], path: str) -> None:
    from rich.console import Console

    print_stage_table(summary)
    console = Console(soft_wrap=True)
    data = summary.get("data")
    if data and "acquire" in summary.get("stages", {}):
        console.print(
            f"data: {data['rows']} images, {data['classes']} classes ({data.get('target', 'single')})"
            f"{', cache hit' if data.get('cache_hit') else ''} → {data['path']}"
        )
    test = summary.get("metrics", {}).get("test")
    if test and "accuracy" in test:
        console.print(
            f"test accuracy: {test['accuracy']:.4f}   macro-F1: {test['macro_f1']:.4f}   ({test['images']} images)"
        )
    elif test:  # another task's metrics (mean Dice, mAP, ...): its top-level numbers
        numbers = "   ".join(f"{k}: {v:.4f}" for k, v in test.items() if isinstance(v, float))
        console.print(f"test {numbers}   ({test.get('images', '?')} images)")
    for exp in summary.get("exports", []):
        console.print(f"export {exp['format']}: max |diff| vs eager {exp['max_abs_diff']:.2e}")
    console.print(f"summary: {path}")
