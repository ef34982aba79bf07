import os
from pathlib import Path

import pytest

# Keep every test's Prefect state away from ~/.prefect.
os.environ.setdefault("PREFECT_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"graft-test-prefect-{os.getpid()}"))
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "graft")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@pytest.fixture(scope="module", autouse=True)
def settle_prefect_log_workers():
    """After each test file, let Prefect's background log and event workers send what they hold.

    A file that ran flows against a server it has since stopped leaves their batches behind; sent
    later, their "--- Error logging to API ---" lands on whatever stderr a later test of the same
    xdist worker has redirected (test_config_properties counts the CLI's stderr lines).
    """
    yield
    from graftflow.pipelines.early_server import drain_prefect_workers

    drain_prefect_workers()


@pytest.fixture(scope="session")
def prefect_harness():
    """A throw-away Prefect server (SQLite) for every test that runs flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One real `prefect server start` for the session's `graft` subprocesses.

    Without it every `graft run` subprocess starts its own ephemeral server (and, in a fresh
    PREFECT_HOME, migrates its database): 10–25 s of CPU apiece, most of the suite's time on two
    cores. Subprocesses started after this fixture inherit PREFECT_API_URL and run as clients of it;
    `test_external_loss_plugin_is_used_by_graft_run` keeps covering ephemeral mode (`make run`).
    Yields the server's PREFECT_HOME (where its SQLite database lives).
    """
    from tests.prefect_server import prefect_server

    workdir = tmp_path_factory.mktemp("prefect-api")
    with prefect_server(workdir, ui=False) as env, pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", env["PREFECT_API_URL"])
        yield Path(env["PREFECT_HOME"])


@pytest.fixture
def tiny_overrides(tmp_path):
    """--set values that make the digits demo take seconds (8 px, few epochs) and still transfer (~0.95)."""
    return [
        f"artifact_root={tmp_path / 'runs'}",
        f"data.cache_dir={tmp_path / 'datasets'}",
        "data.image_size=8",
        "pretrain.epochs=3",
        "pretrain.schedule=constant",
        "finetune.freeze_epochs=1",
        "finetune.epochs=2",
        "finetune.schedule=constant",
        "augment.preview=4",
    ]
