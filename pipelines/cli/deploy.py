"""`graft deploy CONFIG`: a config as a Prefect deployment (created, updated, or left alone); `graft deployments`."""

from __future__ import annotations

import argparse
import json

from graftflow.pipelines.cli.common import add_config_arguments


def register(sub: argparse._SubParsersAction) -> None:
    deploy = sub.add_parser(
        "deploy", help="deploy a config to the Prefect server at PREFECT_API_URL (idempotent)", description=__doc__
    )
    add_config_arguments(deploy)
    deploy.add_argument("--name", help="deployment name (default: the config's name)")
    deploy.add_argument(
        "--flow", default="transfer", help="transfer (default), or a stage's flow: acquire, finetune, …"
    )
    when = deploy.add_mutually_exclusive_group()
    when.add_argument("--cron", help="cron schedule, UTC (e.g. '0 3 * * *')")
    when.add_argument("--interval", type=float, metavar="SECONDS", help="run every SECONDS")
    deploy.add_argument("--pool", default="local", help="work pool whose workers run it (default: local)")
    deploy.set_defaults(func=main)

    listing = sub.add_parser("deployments", help="list graftflow's deployments on the Prefect server")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(func=list_main)


def _require_server() -> None:
    from prefect.settings import PREFECT_API_URL

    from graftflow.core.errors import ConfigError

    if not PREFECT_API_URL.value():
        raise ConfigError(
            "PREFECT_API_URL is not set: a deployment lives on a Prefect server "
            "(`make server`, then PREFECT_API_URL=http://127.0.0.1:4200/api)"
        )


def _reachable(call):
    """Prefect's client errors (no server at the URL, a 4xx) as one line naming the server."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.settings import PREFECT_API_URL

    from graftflow.core.errors import GraftError

    try:
        return call()
    except (httpx.TransportError, PrefectHTTPStatusError, RuntimeError) as exc:
        raise GraftError(f"Prefect server at {PREFECT_API_URL.value()}: {type(exc).__name__}: {exc}") from None


def main(args: argparse.Namespace) -> int:
    from graftflow.core import stage_table
    from graftflow.core.config import load_config
    from graftflow.core.errors import ConfigError
    from graftflow.core.plugin_manager import PluginHost
    from graftflow.core.validation import validate_config
    from graftflow.pipelines import deployments

    config = load_config(args.config, args.set or [])
    if args.flow not in deployments.flow_names():
        raise ConfigError(f"--flow: unknown flow '{args.flow}'; flows are {', '.join(deployments.flow_names())}")
    if args.interval is not None and args.interval <= 0:
        raise ConfigError(f"--interval: must be > 0 seconds, got {args.interval:g}")
    stages = list(stage_table.CHAIN) if args.flow == "transfer" else [*stage_table.stage(args.flow).prepare, args.flow]
    validate_config(config, PluginHost(config.plugins), stages)  # a bad config is never deployed
    spec = deployments.deployment_spec(
        config, args.flow, name=args.name, cron=args.cron, interval=args.interval, pool=args.pool
    )
    _require_server()
    deployment_id, status = _reachable(lambda: deployments.apply(spec))
    full = f"{spec['flow_name']}/{spec['name']}"
    when = f"cron '{args.cron}' UTC" if args.cron else f"every {args.interval:g} s" if args.interval else "no schedule"
    print(f"{status}: deployment {full} ({deployment_id}) → pool '{args.pool}', {when}")
    print(f"run it: prefect deployment run '{full}'   (or the UI: Deployments → {full} → Run → Custom run)")
    return 0


def list_main(args: argparse.Namespace) -> int:
    from graftflow.pipelines import deployments

    _require_server()
    rows = _reachable(deployments.listing)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="graftflow deployments")
    for col in ("deployment", "pipeline", "pool", "schedules", "updated"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row["deployment"], row["pipeline"], row["pool"], ", ".join(row["schedules"]) or "-", row["updated"]
        )
    Console(soft_wrap=True).print(table)
    return 0
