"""MoCo v2 (He et al. 2020; Chen et al. 2020): a momentum key encoder and a queue of negatives.

The query encoder (backbone + projector) is trained; the key encoder is its exponential
moving average and is never handed to the optimizer (`requires_grad=False`). The EMA
update runs at the start of every `step`, i.e. after the previous optimizer step, so
the pretext needs nothing beyond the `step(images, labels)` contract. Keys of the last
`queue` images serve as negatives (`infonce` with `negatives=`). On one device the keys
are encoded in shuffled sub-batches, MoCo's "shuffling BN", so that BatchNorm statistics
cannot leak which key belongs to which query.
"""

from __future__ import annotations

from pydantic import Field

from graftflow.core import PretextTask, forward_to, hookimpl, lazy_module
from graftflow.plugins.pretext._view_params import ViewParams

# The pretext's torch code lives in _moco.py, imported when one is built: registering and
# checking a config imports no torch.
_IMPL = "graftflow.plugins.pretext._moco"
_impl = lazy_module(_IMPL)
__getattr__ = forward_to(_IMPL, ("MoCo",))


class MoCoParams(ViewParams):
    proj_dim: int = Field(64, gt=0, description="Size of the projected embedding.")
    hidden_dim: int | None = Field(None, gt=0, description="Hidden width of the projector (default: feature size).")
    momentum: float = Field(0.99, ge=0, lt=1, description="EMA factor of the key encoder.")
    queue: int = Field(1024, gt=0, description="Number of negative keys kept from earlier batches.")
    shuffle_groups: int = Field(4, gt=0, description="Sub-batches the keys are encoded in (shuffling BN).")


@hookimpl
def graft_pretext_tasks():
    return [
        PretextTask(
            name="moco",
            build=lambda ctx, **params: _impl.MoCo(ctx, **params),
            needs_labels=False,
            params_model=MoCoParams,
            loss_kind="pretext",
            default_loss="infonce",
            description="contrastive with a momentum key encoder and a queue of negatives (no labels)",
        )
    ]
