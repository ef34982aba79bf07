import os
from pathlib import Path

import pytest

# Keep every test's Prefect state away from ~/.prefect.
os.environ.setdefault("PREFECT_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"graft-test-prefect-{os.getpid()}"))
os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "graft")
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


@pytest.fixture(scope="session")
def prefect_harness():
    """A throw-away Prefect server (SQLite) for every test that runs flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


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

