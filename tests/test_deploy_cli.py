"""`graft deploy` without a server: what a deployment is made of, and every mistake as one line before any work."""

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from graftflow.core import stage_table
from graftflow.core.config import load_config
from graftflow.pipelines import deployments
from graftflow.pipelines.cli import main
from tests.support import DIGITS


def test_every_flow_of_the_stage_table_can_be_deployed_with_the_config_as_parameters(tmp_path):
    config = load_config(DIGITS, ["finetune.epochs=7"])
    assert deployments.flow_names() == ["transfer", *(s.name for s in stage_table.STAGES)]
    for flow in deployments.flow_names():
        spec = deployments.deployment_spec(
            config, flow, cron="0 4 * * *", workdir=tmp_path, environ={"GRAFT_PLUGINS": "./x.py", "AWS_SECRET": "s"}
        )
        assert spec["entrypoint"] == f"graftflow.pipelines.flows:{flow.replace('-', '_')}"
        assert spec["flow_name"] == flow and spec["name"] == "digits-transfer"
        assert spec["parameters"] == {"config": config.model_dump(mode="json")}
        assert spec["job_variables"]["env"] == {"PREFECT_LOGGING_EXTRA_LOGGERS": "graft", "GRAFT_PLUGINS": "./x.py"}
        assert spec["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == str(tmp_path)
        assert [s.schedule.cron for s in spec["schedules"]] == ["0 4 * * *"]
        assert "config" in spec["parameter_openapi_schema"]["properties"]
    assert deployments.deployment_spec(config, "finetune", interval=60)["schedules"][0].schedule.interval.seconds == 60


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--flow", "nope"], "error: --flow: unknown flow 'nope'; flows are transfer, acquire"),
        (["--cron", "every day"], "error: --cron: 'every day' is not a cron expression"),
        (["--interval", "0"], "error: --interval: must be > 0 seconds"),
        (["--set", "finetune.loss=nope"], "error: finetune.loss.name: unknown loss 'nope'"),
    ],
)
def test_a_mistake_is_one_line_and_exit_2(args, message, capsys):
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # nothing listens there
        assert main(["deploy", str(DIGITS), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_an_unreachable_server_is_one_line(capsys):
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        assert main(["deploy", str(DIGITS)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Prefect server at http://127.0.0.1:9/api:") and "\n" not in err, err
