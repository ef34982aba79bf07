"""Prefect Secret blocks a config names (`data.source.secret_block`, `storage.secret_block`).

Only `pipelines` reads them (core and plugins never import Prefect); the value is handed on in
memory and never written anywhere.
"""

from __future__ import annotations

from typing import Any

from graftflow.core.errors import GraftError


def secret_value(name: str, field: str, example: str, error: type[GraftError]) -> Any:
    """The block's value; a block that does not exist is one line naming `field` and how to create it."""
    from prefect.blocks.system import Secret

    from graftflow.pipelines import early_server

    early_server.ready()  # `graft run` checks the config while its temporary server starts

    try:
        return Secret.load(name).get()
    except ValueError:
        raise error(
            f"{field}: there is no Prefect Secret block named '{name}' "
            f"(create one: Secret(value={example}).save('{name}'))"
        ) from None
