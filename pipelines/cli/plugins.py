"""`graft plugins`: every registered plugin item, with its origin and version."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    plugins = sub.add_parser("plugins", help="list every registered plugin item")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument("--plugin", action="append", help="also load this plugin module or .py file")
    plugins.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
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
