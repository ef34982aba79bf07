"""`graft run`'s temporary Prefect server, started first thing, so it comes up while the run gets ready.

Without an API URL, Prefect starts an ephemeral server on the first flow call and waits for it: on two
cores that is 7–15 s, and its client first imports the whole server package into this process (~4 s)
only to launch it. Profiling `graft run` showed that wait as the largest part of its orchestration cost
(docs/performance.md). Here the same server — Prefect's own command (`uvicorn --factory
prefect.server.api.server:create_app`, the UI off, ephemeral mode) on a free loopback port — is
launched before the config is checked, and `PREFECT_API_URL` points this process and its children at
it, so the config check, the imports of torch, the plugins and Prefect all overlap its start-up, and
the server package is never imported here. `ready()` waits for its health check before the first API
call; the command's end stops it (terminate, then kill) once Prefect's log and event workers drained, like
Prefect's own ephemeral server at exit.

It is only done where Prefect would have started an ephemeral server anyway: no `PREFECT_API_URL` in
the environment, nor in the active profile, nor in a `prefect.toml`, `.env` or `pyproject.toml` of the
current folder (a configured server is always used as configured).
"""

from __future__ import annotations

import atexit
import os
import random
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from graftflow.core.errors import GraftError

API_URL = "PREFECT_API_URL"
_current: EarlyServer | None = None


class EarlyServer:
    """One Prefect server subprocess on a free port of 127.0.0.1; `ready()` waits for its health check."""

    PORTS = range(8000, 9000)  # Prefect's own range for its ephemeral server

    def __init__(self) -> None:
        self.port = _free_port(self.PORTS)
        self.process: subprocess.Popen | None = None
        self.started = time.perf_counter()
        self.healthy = False

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> EarlyServer:
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        env.pop(API_URL, None)
        argv = [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
        self.process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL)
        return self

    def ready(self, timeout: float | None = None) -> None:
        """Block until the server answers /health (a port taken meanwhile: start again on another)."""
        import httpx

        if self.healthy:
            return
        limit = timeout or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
        deadline = time.perf_counter() + limit
        with httpx.Client() as client:
            while time.perf_counter() < deadline:
                code = self.process.poll()
                if code == 3:  # uvicorn: address in use
                    raise GraftError(f"the temporary Prefect server could not bind port {self.port}; run again")
                if code is not None:
                    raise GraftError(f"the temporary Prefect server exited with code {code} while starting")
                try:
                    if client.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                        self.healthy = True
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise GraftError(f"the temporary Prefect server did not answer within {limit:g} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _free_port(ports: range) -> int:
    for _ in range(20):
        port = random.choice(ports)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise GraftError("no free port between 8000 and 8999 for the temporary Prefect server")


def api_configured(cwd: Path | None = None) -> bool:
    """Whether anything Prefect reads may name an API URL (then Prefect decides, as always)."""
    if os.environ.get(API_URL):
        return True
    if "prefect.settings" in sys.modules:  # already loaded in this process (a test, a notebook): ask Prefect
        from prefect.settings import get_current_settings

        return get_current_settings().api.url is not None
    cwd = cwd or Path.cwd()
    if any(_mentions_api_url(cwd / name) for name in ("prefect.toml", ".env", "pyproject.toml")):
        return True
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    return _profile_sets_api_url(profiles, os.environ.get("PREFECT_PROFILE"))


def _mentions_api_url(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    if path.name == "pyproject.toml" and "tool.prefect" not in text:
        return False
    return API_URL in text or "[api]" in text or "api.url" in text or "[tool.prefect.api]" in text


def _profile_sets_api_url(profiles: Path, wanted: str | None) -> bool:
    try:
        data = tomllib.loads(profiles.read_text())
    except FileNotFoundError:
        return False
    except (OSError, tomllib.TOMLDecodeError):
        return True  # unreadable: let Prefect decide
    name = wanted or data.get("active", "ephemeral")
    return bool(data.get("profiles", {}).get(name, {}).get(API_URL))


def start() -> EarlyServer | None:
    """Launch the server and point this process at it, unless an API URL is configured somewhere."""
    global _current
    if _current is not None or api_configured():
        return None
    _current = EarlyServer().start()
    os.environ[API_URL] = _current.api_url
    atexit.register(stop)  # if the command did not stop it (stop() is idempotent)
    return _current


def running() -> bool:
    """Whether this process started an early server (and it has not been stopped)."""
    return _current is not None


def ready() -> None:
    """Wait for the early server, if this process started one; a no-op otherwise."""
    if _current is not None:
        _current.ready()


def stop() -> None:
    """Stop the early server once Prefect's log and event workers sent what they hold."""
    global _current
    if _current is None:
        return
    server, _current = _current, None
    if server.healthy:
        drain_prefect_workers()
    server.stop()
    if os.environ.get(API_URL) == server.api_url:
        del os.environ[API_URL]


def drain_prefect_workers(timeout: float = 5) -> None:
    """Let Prefect's background log and event workers send what they hold (if Prefect is loaded at all)."""
    if "prefect.logging.handlers" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)
