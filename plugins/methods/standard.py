"""The standard method: the stage's loss on each labelled batch, nothing added."""

from __future__ import annotations

from graftflow.core import FinetuneMethod, MethodSpec, Params, hookimpl


class StandardParams(Params):
    """The standard method takes no parameters."""


@hookimpl
def graft_finetune_methods():
    return [
        MethodSpec(
            name="standard",
            build=lambda: FinetuneMethod(),
            params_model=StandardParams,
            description="the stage's loss on labelled batches (the default)",
        )
    ]
