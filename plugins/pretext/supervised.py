"""Supervised pretraining: a classifier on the pretraining classes; its body is the backbone."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from graftflow.core import PretextTask, forward_to, hookimpl, lazy_module

# The pretext's torch code lives in _supervised.py, imported when one is built: registering and
# checking a config imports no torch.
_IMPL = "graftflow.plugins.pretext._supervised"
_impl = lazy_module(_IMPL)
__getattr__ = forward_to(_IMPL, ("SupervisedPretext",))


class SupervisedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@hookimpl
def graft_pretext_tasks():
    return [
        PretextTask(
            name="supervised",
            build=lambda ctx: _impl.SupervisedPretext(ctx),
            needs_labels=True,
            params_model=SupervisedParams,
            description="train a classifier on labelled pretraining classes",
        )
    ]
