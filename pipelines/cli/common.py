"""What the commands share: the one-line error, config arguments, Prefect's defaults, the run summary."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from graftflow.core.errors import GraftError


def print_error(exc: GraftError) -> int:
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(f"error: {line}", file=sys.stderr)
    return exc.exit_code


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")


def prefect_defaults() -> None:
    """Settings for the ephemeral server a CLI run starts; an explicit environment wins."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "graft")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # The ephemeral server's telemetry heartbeat races its own SQLite migrations ("database is locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh PREFECT_HOME migrates its SQLite database first: ~20 s on 2 busy cores, Prefect's default limit.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def print_summary(summary: dict[str, Any], path: str) -> None:
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
    data = summary.get("data")
    if data and "acquire" in summary.get("stages", {}):
        console.print(
            f"data: {data['rows']} images, {data['classes']} classes ({data.get('target', 'single')})"
            f"{', cache hit' if data.get('cache_hit') else ''} → {data['path']}"
        )
    test = summary.get("metrics", {}).get("test")
    if test:
        console.print(
            f"test accuracy: {test['accuracy']:.4f}   macro-F1: {test['macro_f1']:.4f}   ({test['images']} images)"
        )
    for exp in summary.get("exports", []):
        console.print(f"export {exp['format']}: max |diff| vs eager {exp['max_abs_diff']:.2e}")
    console.print(f"summary: {path}")
