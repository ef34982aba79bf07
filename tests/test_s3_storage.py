"""S3 end to end, against a real S3 API on loopback (moto's server mode) through s3fs.

Images come from `s3://bucket/images`; the run, its checkpoints and the data store live in the bucket.
`graft run` is killed by SIGKILL right after a fine-tuning checkpoint landed in S3 (a one-file plugin
kills its own process from `graft_on_checkpoint`), then `graft run --run-id` resumes it there. The
killed run takes its credentials from the environment, the resumed one from a Prefect Secret block
(`storage.secret_block`, no AWS variable in its environment), and none of their values is in any file
written: every object in the bucket, every file under the test's folder, the Prefect server's database
and logs.
"""

import io
import os
import subprocess
import time

import httpx
import pytest
import yaml
from prefect.blocks.system import Secret

from graftflow.core.config import PipelineConfig
from graftflow.core.errors import ConfigError
from graftflow.pipelines.storage_credentials import ENVIRONMENT, block_credentials, storage_credentials
from tests.prefect_server import BIN, free_port
from tests.support import graft

pytestmark = pytest.mark.slow

pytest.importorskip("s3fs")

KEY_ID, SECRET = "AKIAGRAFTTESTKEY0042", "graft-test-secret-Zq8w1Yp3"
KILLER = """
import os, signal
from graftflow.core import hookimpl

@hookimpl
def graft_on_checkpoint(run, stage, path, step):
    if stage == "finetune" and os.environ.get("KILL_AT_STEP") == str(step):
        os.kill(os.getpid(), signal.SIGKILL)  # as a lost spot instance would: no clean-up runs
"""


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port; the environment points s3fs (and subprocesses) at it."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ACCESS_KEY_ID": KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
        }.items():
            patch.setenv(name, value)
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        import fsspec

        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("bucket")
        yield fs
        proc.terminate()
        proc.wait(10)
        log.close()


def upload_digits(fs, classes=(5, 6, 7), per_class=60) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    files, counts = {}, dict.fromkeys(classes, 0)
    for i, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        if label in counts and counts[label] < per_class:
            counts[label] += 1
            png = io.BytesIO()
            Image.fromarray((image * 16).clip(0, 255).astype("uint8")).save(png, format="PNG")
            files[f"bucket/images/{label}/{i}.png"] = png.getvalue()
    fs.pipe(files)


def test_acquire_train_kill_and_resume_on_s3_without_leaking_credentials(s3, prefect_api, on_server, tmp_path):
    upload_digits(s3)
    config = tmp_path / "s3.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "s3-digits",
                "artifact_root": "s3://bucket/runs",
                "data": {
                    "source": {"kind": "folder", "path": "s3://bucket/images"},
                    "cache_dir": "s3://bucket/datasets",
                    "image_size": 8,
                    "batch_size": 32,
                },
                "pretrain": {"enabled": False},
                "finetune": {"freeze_epochs": 0, "epochs": 2, "schedule": "constant", "lr": 3e-3},
                "checkpoints": {"every_steps": 3},
                "export": {"formats": ["safetensors"]},
            }
        )
    )
    (tmp_path / "killer.py").write_text(KILLER)
    stages = "acquire,finetune"
    killed = graft(
        "run", str(config), "--stages", stages, env={"GRAFT_PLUGINS": str(tmp_path / "killer.py"), "KILL_AT_STEP": "3"}
    )
    assert killed.returncode == -9, killed.stdout[-2000:] + killed.stderr[-2000:]
    listed = s3.ls("bucket/runs/s3-digits")
    [run_url] = [u for u in listed if not u.rsplit("/", 1)[-1].startswith("_")]  # _cache/ holds pointers
    run_id = run_url.rsplit("/", 1)[-1]
    summary = yaml.safe_load(s3.cat_file(f"{run_url}/summary.json"))
    assert summary["stages"]["acquire"]["status"] == "completed"
    assert summary["stages"]["finetune"]["status"] == "running"  # killed mid-stage: never marked done
    assert s3.exists(f"{run_url}/_checkpoints/finetune/step-00000003/COMPLETE")
    assert s3.exists(f"{run_url}/_checkpoints/finetune/step-00000003/tensors.safetensors")
    assert not s3.exists(f"{run_url}/finetune")  # the stage folder was never published
    assert any(p.endswith("_SUCCESS") for p in s3.find("bucket/datasets"))  # the store is whole

    # The resumed run's process has no AWS variable: credentials and endpoint come from a Prefect Secret block.
    Secret(value=block_value(s3)).save("team-s3", overwrite=True)
    no_aws = dict.fromkeys(ENVIRONMENT.values())
    resumed = graft(
        "run", str(config), "--stages", stages, "--run-id", run_id, "--set", "storage.secret_block=team-s3", env=no_aws
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    s3.invalidate_cache()
    summary = yaml.safe_load(s3.cat_file(f"{run_url}/summary.json"))
    assert summary["stages"]["finetune"]["status"] == "completed"
    assert summary["finetune"]["resumed_from_step"] == 3
    assert summary["data"]["path"].startswith("s3://bucket/datasets/")
    assert s3.exists(f"{run_url}/finetune/model/model.safetensors")
    assert not s3.exists(f"{run_url}/_checkpoints/finetune")  # removed once the stage succeeded

    leaks = [
        where
        for where, data in written_files(s3, tmp_path, prefect_api)
        if KEY_ID.encode() in data or SECRET.encode() in data
    ]
    leaks += [
        name for name, out in (("first run", killed), ("resumed run", resumed)) if SECRET in out.stdout + out.stderr
    ]
    assert not leaks, leaks


@pytest.fixture
def on_server(prefect_api):
    """This process's Prefect client talks to the session's server (settings are read when Prefect is imported)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
        yield


def block_value(s3) -> dict[str, str]:
    return {
        "aws_access_key_id": KEY_ID,
        "aws_secret_access_key": SECRET,
        "endpoint_url": os.environ["AWS_ENDPOINT_URL_S3"],
        "region_name": "us-east-1",
    }


def test_a_missing_or_misshapen_storage_block_is_one_line_naming_the_field(on_server):
    Secret(value={"aws_access_key_id": KEY_ID}).save("half-s3", overwrite=True)
    with pytest.raises(ConfigError, match=r"^storage.secret_block: there is no Prefect Secret block named 'nope' "):
        block_credentials("nope")
    with pytest.raises(ConfigError) as half:
        block_credentials("half-s3")
    assert str(half.value).startswith("storage.secret_block: Prefect Secret block 'half-s3' must hold {")
    assert KEY_ID not in str(half.value) and "\n" not in str(half.value)


def test_the_block_holds_s3_credentials_only_while_the_stages_run(s3, on_server):
    """In the environment (where botocore reads them) inside, the caller's own values back outside."""
    Secret(value={**block_value(s3), "aws_access_key_id": "AKIAFROMTHEBLOCK0001"}).save("scoped-s3", overwrite=True)
    config = PipelineConfig.model_validate({"storage": {"secret_block": "scoped-s3"}})
    with storage_credentials(config):
        assert os.environ["AWS_ACCESS_KEY_ID"] == "AKIAFROMTHEBLOCK0001"
    assert os.environ["AWS_ACCESS_KEY_ID"] == KEY_ID


def written_files(s3, *folders):
    for key in s3.find("bucket"):
        yield f"s3://{key}", s3.cat_file(key)
    for folder in folders:
        for root, _dirs, names in os.walk(folder):
            for name in names:
                path = os.path.join(root, name)
                if os.path.isfile(path):
                    with open(path, "rb") as f:
                        yield path, f.read()
