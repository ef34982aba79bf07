"""`graft`: run a pipeline with no server, list plugins.

User mistakes (a `GraftError`) print one line per problem and exit 2, with no
traceback; the config is checked against the plugins before anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from graftflow.core.errors import GraftError


def _error(exc: GraftError) -> int:
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(f"error: {line}", file=sys.stderr)
    return exc.exit_code


def cmd_plugins(args: argparse.Namespace) -> int:
    from graftflow.core.plugin_manager import PluginHost

    rows = PluginHost(args.plugin or ()).listing()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="graftflow plugins")
    for col in ("kind", "name", "plugin", "origin", "version"):
        table.add_column(col)
    for row in rows:
        table.add_row(*(row[c] for c in ("kind", "name", "plugin", "origin", "version")))
    Console().print(table)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from graftflow.core.config import load_config
    from graftflow.core.plugin_manager import PluginHost
    from graftflow.core.runs import Run
    from graftflow.core.stage_table import parse_stages
    from graftflow.core.validation import validate_config

    config = load_config(args.config, args.set or [])
    stages = parse_stages(args.stages)
    validate_config(config, PluginHost(config.plugins), stages)
    run = Run.open(config, args.run_id)  # an unwritable artifact_root fails here, before Prefect starts

    _prefect_defaults()
    from graftflow.pipelines.flows import transfer

    result = transfer(config=config, stages=stages, run_id=run.run_id, force=args.force)
    _print_summary(run.summary(), result["summary"])
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from graftflow.core.config import load_config
    from graftflow.core.plugin_manager import PluginHost
    from graftflow.core.runs import Run
    from graftflow.core.validation import validate_config

    config = load_config(args.config, args.set or [])
    validate_config(config, PluginHost(config.plugins), ["acquire"])
    run = Run.open(config, args.run_id)
    _prefect_defaults()
    from graftflow.pipelines.flows import lr_find

    result = lr_find(config=config, run_id=run.run_id)
    found = run.summary()["lr_find"]
    print(
        f"suggested head LR: {found['suggested_lr']:.3g}  (steepest descent; min-loss/10: "
        f"{found.get('min_loss_div10', float('nan')):.3g}; from {found['start_weights']} weights)"
    )
    print(f"plot: {result['url']}/lr_find.png")
    return 0


def _prefect_defaults() -> None:
    """Settings for the ephemeral server a CLI run starts; an explicit environment wins."""
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "graft")
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # The ephemeral server's telemetry heartbeat races its own SQLite migrations ("database is locked").
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # A fresh PREFECT_HOME migrates its SQLite database first: ~20 s on 2 busy cores, Prefect's default limit.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def _print_summary(summary: dict[str, Any], path: str) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graft", description="Transfer-learning pipelines on Prefect.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline config (no server needed)")
    run.add_argument("config", help="YAML config file")
    run.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")
    run.add_argument("--stages", help="comma-separated stages to run (default: all)")
    run.add_argument("--run-id", help="continue this run: completed stages are skipped, an interrupted one resumes")
    run.add_argument("--force", action="store_true", help="with --run-id: run completed stages again")
    run.set_defaults(func=cmd_run)
    finder = sub.add_parser("lr-find", help="LR range test for fine-tuning: plot and suggested LR (weights untouched)")
    finder.add_argument("config", help="YAML config file")
    finder.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")
    finder.add_argument("--run-id", help="use this run's data and pretrained backbone")
    finder.set_defaults(func=cmd_lr_find)
    plugins = sub.add_parser("plugins", help="list every registered plugin item")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument("--plugin", action="append", help="also load this plugin module or .py file")
    plugins.set_defaults(func=cmd_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GraftError as exc:
        return _error(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
