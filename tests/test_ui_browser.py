"""The Prefect UI in Debian's Chromium: Run → Custom run on the transfer deployment, epochs changed, submitted.

The deployment's default parameters are first set to the tiny demo (as an operator editing the
deployment would), so the run takes seconds; in the form the fine-tuning epochs go from 1 to 2,
and the run must complete having trained with 2 (1 head-only epoch + 2).
"""

import json
import re
import shutil
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
    [summary] = (tmp_path / "runs").glob("digits-transfer/*/summary.json")
    summary = json.loads(summary.read_text())
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
            page.get_by_role("button", name="Submit").click()
            expect(page.get_by_text(re.compile("Flow run created|scheduled to start"))).to_be_visible(timeout=30_000)
        finally:
            browser.close()
    runs = server.post("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}})
    [run] = [r for r in runs if r["parameters"].get("config", {}).get("finetune", {}).get("epochs") == 2]
    run = server.wait(run["id"])
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    assert "ft 1+2 ep" in run["name"]
