"""`graft run`'s early Prefect server: started only where Prefect would start an ephemeral one, and a
real server that answers, points this process at itself, and is gone after `stop()`."""

import os

import httpx
import pytest

from graftflow.pipelines import early_server


@pytest.fixture
def bare_env(tmp_path, monkeypatch):
    """No API URL anywhere Prefect looks: env, profile, files of the current folder."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_api_url_anywhere_prefect_reads_it_leaves_prefect_alone(bare_env, monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "prefect.settings", raising=False)  # the console script's case
    assert early_server.api_configured(cwd=bare_env) is False
    (bare_env / "home").mkdir()
    profiles = bare_env / "home" / "profiles.toml"
    profiles.write_text('active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://10.0.0.1:4200/api"\n')
    assert early_server.api_configured(cwd=bare_env) is True
    profiles.write_text('active = "local"\n[profiles.local]\nPREFECT_LOGGING_LEVEL = "INFO"\n')
    assert early_server.api_configured(cwd=bare_env) is False
    (bare_env / "prefect.toml").write_text('[api]\nurl = "http://10.0.0.1:4200/api"\n')
    assert early_server.api_configured(cwd=bare_env) is True
    (bare_env / "prefect.toml").unlink()
    monkeypatch.setenv("PREFECT_API_URL", "http://10.0.0.1:4200/api")
    assert early_server.api_configured(cwd=bare_env) is True


@pytest.mark.slow
def test_the_early_server_answers_and_is_stopped(bare_env, monkeypatch):
    monkeypatch.setattr(early_server, "api_configured", lambda: False)  # this process has Prefect loaded
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = early_server.start()
    try:
        assert os.environ["PREFECT_API_URL"] == server.api_url
        early_server.ready()
        assert httpx.get(f"{server.api_url}/health", timeout=5).status_code == 200
    finally:
        early_server.stop()
    assert server.process.poll() is not None
    assert "PREFECT_API_URL" not in os.environ
    assert not early_server.running()
