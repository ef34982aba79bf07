"""S3 credentials from a Prefect Secret block (`storage.secret_block`), for workers that hold no AWS environment.

s3fs (through botocore) reads its credentials and endpoint from the environment, so the block's values are
put there, for the process that runs the stages (a worker's flow-run process, `graft run`) and the DDP ranks
it starts, and taken away afterwards. They never enter the config, Prefect parameters, summary.json or logs:
the config names only the block.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

from graftflow.core.config import PipelineConfig
from graftflow.core.errors import ConfigError
from graftflow.pipelines.secret_blocks import secret_value

# The block's keys (boto3's own argument names) and the variables botocore reads them from.
ENVIRONMENT = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
    "endpoint_url": "AWS_ENDPOINT_URL_S3",
    "region_name": "AWS_DEFAULT_REGION",
}
REQUIRED = ("aws_access_key_id", "aws_secret_access_key")


def block_credentials(name: str) -> dict[str, str]:
    """The block's values, checked: a missing block or a wrong shape is one line naming the field."""
    example = '{"aws_access_key_id": ..., "aws_secret_access_key": ...}'
    value = secret_value(name, "storage.secret_block", example, ConfigError)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    shape = '{"aws_access_key_id": ..., "aws_secret_access_key": ...} (optionally ' + ", ".join(
        f'"{k}"' for k in ENVIRONMENT if k not in REQUIRED
    )
    if not isinstance(value, dict) or any(not value.get(k) for k in REQUIRED):
        raise ConfigError(f"storage.secret_block: Prefect Secret block '{name}' must hold {shape})")
    unknown = sorted(set(value) - set(ENVIRONMENT))
    if unknown:
        raise ConfigError(
            f"storage.secret_block: Prefect Secret block '{name}' has unknown keys {unknown}; it holds {shape})"
        )
    return {k: str(v) for k, v in value.items() if v}


# The blocks whose values are in the environment now, innermost last: nested flows read a block once.
_held: list[str] = []


@contextmanager
def storage_credentials(config: PipelineConfig) -> Iterator[None]:
    """The block's credentials in the environment for the duration; nothing changes without a block.

    The block replaces every AWS variable it could hold (a stray AWS_SESSION_TOKEN from the environment
    would not pair with the block's keys), and s3fs's cached clients are dropped on the way in and out,
    so no client made with other credentials is reused. Inside a block's own scope (the CLI's, then the
    transfer flow's, then each stage flow's) it is read from Prefect once.
    """
    name = config.storage.secret_block
    if not name or (_held and _held[-1] == name):  # none, or already there: `graft run` → transfer → each stage
        yield
        return
    values = block_credentials(name)
    saved = {var: os.environ.get(var) for var in ENVIRONMENT.values()}
    for key, var in ENVIRONMENT.items():
        if key in values:
            os.environ[var] = values[key]
        else:
            os.environ.pop(var, None)
    _forget_s3_clients()
    _held.append(name)
    try:
        yield
    finally:
        _held.pop()
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        _forget_s3_clients()


def _forget_s3_clients() -> None:
    try:
        import s3fs
    except ImportError:  # without the s3 extra there is no client to forget
        return
    s3fs.S3FileSystem.clear_instance_cache()
