"""The standard method: the stage's loss on each labelled batch, nothing added.

It may still name a `target` domain, which is acquired and scored by evaluate
(accuracy where the target is labelled, prediction entropy always) but never
trained on: the source-only baseline a domain-adaptation method is compared with.
"""

from __future__ import annotations

from pydantic import Field

from graftflow.core import MethodSpec, Params, SourceConfig, hookimpl


class StandardParams(Params):
    target: SourceConfig | None = Field(
        None,
        description="Optional: a target domain (a data source block) that evaluate scores the model on; "
        "never used in training.",
    )


def _build(target=None):
    """The base `FinetuneMethod` as it is (imported here: it is an nn.Module, and registering needs no torch)."""
    from graftflow.core import FinetuneMethod

    return FinetuneMethod()


@hookimpl
def graft_finetune_methods():
    return [
        MethodSpec(
            name="standard",
            build=_build,
            needs_target=False,
            needs_features=False,
            extends_head=False,
            params_model=StandardParams,
            description="the stage's loss on labelled batches (the default)",
        )
    ]
