"""A real Prefect server with the `local` pool, the `gpu` limit, deploy/prefect.yaml deployed and a worker."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from graftflow.core.config import load_config
from tests.prefect_server import BIN, prefect, prefect_server, stop
from tests.support import DIGITS, ROOT

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def tiny_config(tmp_path: Path, *extra: str) -> dict:
    """The demo config at 8 px and one epoch per phase: seconds per stage."""
    overrides = [
        f"artifact_root={tmp_path / 'runs'}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        "data.image_size=8",
        "pretrain.epochs=1",
        "pretrain.schedule=constant",
        "finetune.freeze_epochs=1",
        "finetune.epochs=1",
        "finetune.schedule=constant",
        "augment.preview=4",
        "export.formats=[safetensors]",
        *extra,
    ]
    return load_config(DIGITS, overrides).model_dump(mode="json")


class Server:
    def __init__(self, env: dict[str, str]):
        self.env = env
        self.api = env["PREFECT_API_URL"]
        self.ui = self.api.removesuffix("/api")

    def post(self, path: str, body: dict | None = None):
        response = httpx.post(f"{self.api}{path}", json=body or {}, timeout=30)
        response.raise_for_status()
        return response.json()

    def get(self, path: str):
        response = httpx.get(f"{self.api}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def patch(self, path: str, body: dict) -> httpx.Response:
        response = httpx.patch(f"{self.api}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response

    def deployment_runs(
        self,
        deployment_id: str,
        *,
        timeout: float,
        state: str | None = None,
        where: Callable[[dict], bool] | None = None,
        pause: Callable[[], None] = lambda: time.sleep(1),
    ) -> list[dict]:
        """The deployment's flow runs (in `state`, passing `where`), oldest first, polled until one exists.

        An empty list once `timeout` has passed. `pause` waits between polls (a browser test passes one
        that keeps its page's event loop turning).
        """
        flow_runs: dict = {"deployment_id": {"any_": [deployment_id]}}
        if state is not None:
            flow_runs["state"] = {"type": {"any_": [state]}}
        deadline = time.monotonic() + timeout
        while True:
            runs = self.post("/flow_runs/filter", {"flow_runs": flow_runs, "sort": "EXPECTED_START_TIME_ASC"})
            runs = [r for r in runs if where is None or where(r)]
            if runs or time.monotonic() > deadline:
                return runs
            pause()

    def deployment(self, flow: str, name: str = "digits") -> dict:
        return self.get(f"/deployments/name/{flow}/{name}")

    def run_deployment(self, flow: str, params: dict[str, object], timeout: float = 300, name: str = "digits") -> dict:
        """`prefect deployment run FLOW/NAME -p k=JSON ...`, then wait for the flow run to finish."""
        args = ["deployment", "run", f"{flow}/{name}"]
        for key, value in params.items():
            args += ["-p", f"{key}={json.dumps(value)}"]
        proc = prefect(*args, env=self.env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        run_id = next(line.split()[-1] for line in proc.stdout.splitlines() if "UUID:" in line)
        return self.wait(run_id, timeout)

    def wait(self, flow_run_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            run = self.get(f"/flow_runs/{flow_run_id}")
            if run["state_type"] in TERMINAL:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"flow run {flow_run_id} still {run['state_type']} after {timeout}s")
            time.sleep(1)

    def subflow_runs(self, parent_id: str) -> list[dict]:
        tasks = self.post("/task_runs/filter", {"task_runs": {"flow_run_id": {"any_": [parent_id]}}})
        ids = [t["id"] for t in tasks]
        if not ids:
            return []
        return self.post("/flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"any_": ids}}})

    def artifacts(self, flow_run_ids: list[str]) -> list[dict]:
        return self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": flow_run_ids}}})


@contextmanager
def deployed_server(workdir: Path, db: str = "sqlite") -> Iterator[Server]:
    """Server (SQLite or PostgreSQL), pool and GPU limit, `prefect deploy --all` from deploy/, a worker elsewhere."""
    with prefect_server(workdir, db=db) as env:
        env = {**env, "GRAFT_ROOT": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1"}
        for args in (["work-pool", "create", "local", "--type", "process"], ["gcl", "create", "gpu", "--limit", "1"]):
            proc = prefect(*args, env=env)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        proc = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", "deploy", "--all", "--prefect-file", "deploy/prefect.yaml"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        log = open(workdir / "worker.log", "w")
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "local"],
            env=env,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield Server(env)
        finally:
            stop(worker)
            log.close()
