"""deploy/prefect.yaml is derived from the stage table and the demo config, and fits the flows' schema (no server)."""

import yaml

from graftflow.core import stage_table
from graftflow.core.config import load_config, parse_config
from graftflow.pipelines import deployments as generator
from tests.support import DIGITS, ROOT

PREFECT_YAML = ROOT / "deploy" / "prefect.yaml"


def deployments() -> list[dict]:
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


def test_prefect_yaml_is_the_generated_one():
    assert PREFECT_YAML.read_text() == generator.render(), "deploy/prefect.yaml is stale: run `make prefect-yaml`"


def test_every_flow_of_the_stage_table_is_deployed_to_the_local_pool():
    entrypoints = {d["entrypoint"] for d in deployments()}
    expected = {"transfer", *(s.python_name for s in stage_table.STAGES)}
    assert entrypoints == {f"graftflow.pipelines.flows:{f}" for f in expected}
    assert all(d["work_pool"]["name"] == "local" for d in deployments())
    assert any(s.get("cron") for d in deployments() for s in d.get("schedules", []))
    gpu = {d["entrypoint"].split(":")[1] for d in deployments() if "gpu" in d["tags"]}
    assert gpu == {s.python_name for s in stage_table.STAGES if s.gpu}


def test_default_parameters_are_the_demo_config_and_match_the_schema():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.importtools import import_object
    from prefect.utilities.schema_tools import validate

    demo = load_config(DIGITS).model_dump(mode="json")
    for d in deployments():
        assert parse_config(d["parameters"]["config"]).model_dump(mode="json") == demo, d["entrypoint"]
        flow = import_object(d["entrypoint"])  # the way Prefect's deploy and worker load it
        schema = parameter_schema(flow).model_dump_for_openapi()
        validate(d["parameters"], schema, raise_on_error=True, ignore_required=True)
