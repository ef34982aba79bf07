"""deploy/prefect.yaml stays in step with the demo config and the flows' parameter schema (no server)."""

import yaml

from graftflow.core.config import load_config
from tests.support import DIGITS, ROOT

PREFECT_YAML = ROOT / "deploy" / "prefect.yaml"


def deployments() -> list[dict]:
    return yaml.safe_load(PREFECT_YAML.read_text())["deployments"]


def test_every_flow_is_deployed_to_the_local_pool():
    entrypoints = {d["entrypoint"] for d in deployments()}
    assert entrypoints == {f"pipelines/flows.py:{f}" for f in
                           ("transfer", "acquire", "augment", "pretrain", "finetune", "evaluate", "export", "lr_find")}
    assert all(d["work_pool"]["name"] == "local" for d in deployments())
    assert any(s.get("cron") for d in deployments() for s in d.get("schedules", []))


def test_default_parameters_are_the_demo_config_and_match_the_schema():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    import graftflow.pipelines.flows as flows

    demo = load_config(DIGITS).model_dump(mode="json")
    for d in deployments():
        assert load_config_dict(d["parameters"]["config"]) == demo, d["entrypoint"]
        flow = getattr(flows, d["entrypoint"].split(":")[1])
        schema = parameter_schema(flow).model_dump_for_openapi()
        validate(d["parameters"], schema, raise_on_error=True, ignore_required=True)


def load_config_dict(data: dict) -> dict:
    from graftflow.core.config import parse_config

    return parse_config(data).model_dump(mode="json")
