"""The Prefect UI in Debian's Chromium: Run → Custom run on the transfer deployment, epochs changed, submitted.

The deployment's default parameters are first set to the tiny demo (as an operator editing the
deployment would), so the run takes seconds; in the form the fine-tuning epochs go from 1 to 2,
and the run must complete having trained with 2 (1 head-only epoch + 2).
"""

import json
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.deploy_support import deployed_server, tiny_config

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync", "--disable-quic"]


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_custom_run_from_the_ui_changes_epochs(tmp_path):
    with deployed_server(tmp_path) as server:
        custom_run_in_ui(server, tmp_path)
    # one summary, or two if a second Submit press also went through: both trained with the new value
    summaries = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("digits-transfer/*/summary.json")]
    assert summaries
    summary = summaries[0]
    assert all(s["config"]["finetune"]["epochs"] == 2 for s in summaries)
    assert summary["config"]["finetune"]["epochs"] == 2
    assert summary["finetune"]["epochs_run"] == 3  # 1 head-only + 2
    assert summary["stages"]["export"]["status"] == "completed"


def custom_run_in_ui(server, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    deployment = server.deployment("transfer")
    patched = httpx.patch(f"{server.api}/deployments/{deployment['id']}",
                          json={"parameters": {"config": tiny_config(tmp_path)}}, timeout=30)
    assert patched.status_code == 204, patched.text
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
            label = page.locator("xpath=//label[normalize-space()='FinetuneConfig (Optional)']"
                                 "/ancestor::div[.//label[normalize-space()='Epochs (Optional)']][1]"
                                 "//label[normalize-space()='Epochs (Optional)']").first
            epochs = page.locator(f"[id=\"{label.get_attribute('for')}\"]")
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
                created = created_run(server, deployment["id"], epochs=2, timeout=40 + 40 * attempt,
                                      pause=lambda: page.wait_for_timeout(1000))  # keeps playwright's loop turning
                if created:
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


def created_run(server, deployment_id: str, epochs: int, timeout: float, pause) -> dict | None:
    """The first run of the deployment with `epochs` fine-tuning epochs, once it exists (None after timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = server.post("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}},
                                                 "sort": "EXPECTED_START_TIME_ASC"})
        mine = [r for r in runs if r["parameters"].get("config", {}).get("finetune", {}).get("epochs") == epochs]
        if mine or time.monotonic() > deadline:
            return mine[0] if mine else None
        pause()
