"""`graft run CONFIG`: the transfer pipeline (or some of its stages) with no server needed."""

from __future__ import annotations

import argparse

from graftflow.pipelines.cli.common import add_config_arguments, prefect_defaults, print_summary


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a pipeline config (no server needed)")
    add_config_arguments(run)
    run.add_argument("--stages", help="comma-separated stages to run (default: all)")
    run.add_argument("--run-id", help="continue this run: completed stages are skipped, an interrupted one resumes")
    run.add_argument("--force", action="store_true", help="with --run-id: run completed stages again")
    run.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from graftflow.core.config import load_config
    from graftflow.core.plugin_manager import PluginHost
    from graftflow.core.runs import Run
    from graftflow.core.stage_table import parse_stages
    from graftflow.core.validation import validate_config

    config = load_config(args.config, args.set or [])
    stages = parse_stages(args.stages)
    validate_config(config, PluginHost(config.plugins), stages)
    run = Run.open(config, args.run_id)  # an unwritable artifact_root fails here, before Prefect starts

    prefect_defaults()
    from graftflow.pipelines.flows import transfer

    result = transfer(config=config, stages=stages, run_id=run.run_id, force=args.force)
    print_summary(run.summary(), result["summary"])
    return 0
