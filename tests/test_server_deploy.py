"""Against a real Prefect server: deploy/ deployed, a worker, runs triggered with `prefect deployment run -p`.

One server for the whole story (starting one is the slow part): the pool and GPU limit are created,
`prefect deploy --all` reads deploy/prefect.yaml, a worker started in another directory picks the
runs up, a bad parameter fails with a readable message, a tiny transfer completes with its
artifacts, a same-parameters re-run reuses it, and `force: true` computes again.
"""

import json
from pathlib import Path

import pytest

from tests.deploy_support import deployed_server, tiny_config

pytestmark = pytest.mark.slow


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("digits-transfer/*/summary.json"))


def test_deploy_worker_runs_artifacts_and_cache(tmp_path):
    with deployed_server(tmp_path) as server:
        deployments = {f: server.deployment(f) for f in
                       ("transfer", "acquire", "augment", "pretrain", "finetune", "evaluate", "export", "lr-find")}
        assert all(d["work_pool_name"] == "local" for d in deployments.values())
        assert [s["schedule"]["cron"] for s in deployments["transfer"]["schedules"]] == ["0 3 * * *"]
        # the nightly cron makes scheduled runs at 03:00 UTC (Prefect's scheduler service); then it is paused,
        # which deletes them, so the worker below only ever sees the runs this test triggers
        transfer = deployments["transfer"]
        scheduled = server.scheduled_runs(transfer["id"])
        assert scheduled, "the scheduler created no runs for the nightly schedule (see prefect-server.log)"
        assert {r["expected_start_time"][11:16] for r in scheduled} == {"03:00"}
        assert all(r["auto_scheduled"] and r["parameters"]["config"]["name"] == "digits-transfer" for r in scheduled)
        for d in deployments.values():
            for schedule in d["schedules"]:
                server.patch(f"/deployments/{d['id']}/schedules/{schedule['id']}", {"active": False})
        schema = deployments["transfer"]["parameter_openapi_schema"]
        assert "finetune" in schema["definitions"]["PipelineConfig"]["properties"]

        bad = server.run_deployment("transfer", {"config": {"finetune": {"lr": -1}}}, timeout=180)
        assert bad["state_type"] == "FAILED"
        message = bad["state"]["message"]
        assert "config.finetune.lr" in message and "learning rate must be > 0" in message, message
        assert len(message) < 400, message

        config = tiny_config(tmp_path)
        first = server.run_deployment("transfer", {"config": config})
        assert first["state_type"] == "COMPLETED", first["state"]["message"]
        assert first["name"].startswith("digits-transfer · all stages · resnet-tiny · ft 1+1 ep")
        [run] = run_dirs(tmp_path / "runs")
        summary = json.loads((run / "summary.json").read_text())
        assert all(summary["stages"][s]["status"] == "completed" for s in
                   ("acquire", "augment", "pretrain", "finetune", "evaluate", "export"))
        assert summary["metrics"]["test"]["accuracy"] > 0.5

        children = server.subflow_runs(first["id"])
        assert sorted(c["name"].split("/")[1] for c in children) == sorted(
            ["acquire", "augment", "pretrain", "finetune", "evaluate", "export"])
        artifacts = server.artifacts([c["id"] for c in children])
        by_key = {a["key"]: a for a in artifacts if a["key"]}
        for key in ("digits-transfer-evaluation", "digits-transfer-param-groups", "digits-transfer-exports",
                    "digits-transfer-confusion-matrix", "digits-transfer-finetune-curves",
                    "digits-transfer-augmentation-preview", "digits-transfer-export-files"):
            assert key in by_key, sorted(by_key)
        assert by_key["digits-transfer-confusion-matrix"]["data"].count("data:image/png;base64,") == 1
        assert "data:image/png;base64," in by_key["digits-transfer-finetune-curves"]["data"]
        assert "file://" in by_key["digits-transfer-export-files"]["data"]
        assert "model.safetensors" in by_key["digits-transfer-export-files"]["data"]
        progress = by_key["digits-transfer-finetune-progress"]
        assert progress["type"] == "progress" and float(progress["data"]) == 100.0

        again = server.run_deployment("transfer", {"config": config})
        assert again["state_type"] == "COMPLETED", again["state"]["message"]
        assert server.subflow_runs(again["id"]) == []  # every stage reused, none ran
        assert run_dirs(tmp_path / "runs") == [run]

        # force: computed again in a new run (two stages keep it short), not taken from the cache
        forced = server.run_deployment("transfer", {"config": config, "force": True, "stages": ["acquire", "augment"]})
        assert forced["state_type"] == "COMPLETED", forced["state"]["message"]
        assert forced["name"].startswith("digits-transfer · acquire+augment") and forced["name"].endswith("· force")
        assert len(server.subflow_runs(forced["id"])) == 2
        assert len(run_dirs(tmp_path / "runs")) == 2
