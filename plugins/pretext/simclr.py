"""SimCLR (Chen et al. 2020): two augmented views per image, an MLP projection head, InfoNCE.

No labels are used: the backbone (the configured family with no classifier) learns to map
two views of one image close together and away from every other image of the batch.
The objective is `pretrain.loss` (default `infonce`, i.e. NT-Xent: 2N − 2 negatives per
anchor, temperature `pretrain.loss.temperature`). Works for every family.
"""

from __future__ import annotations

from pydantic import Field

from graftflow.core import PretextTask, forward_to, hookimpl, lazy_module
from graftflow.plugins.pretext._view_params import ViewParams

# The pretext's torch code lives in _simclr.py, imported when one is built: registering and
# checking a config imports no torch.
_IMPL = "graftflow.plugins.pretext._simclr"
_impl = lazy_module(_IMPL)
__getattr__ = forward_to(_IMPL, ("SimCLR",))


class SimCLRParams(ViewParams):
    proj_dim: int = Field(64, gt=0, description="Size of the projected embedding the loss compares.")
    hidden_dim: int | None = Field(None, gt=0, description="Hidden width of the projector (default: feature size).")


@hookimpl
def graft_pretext_tasks():
    return [
        PretextTask(
            name="simclr",
            build=lambda ctx, **params: _impl.SimCLR(ctx, **params),
            needs_labels=False,
            params_model=SimCLRParams,
            loss_kind="pretext",
            default_loss="infonce",
            description="contrastive: two augmented views, projection head, InfoNCE (no labels)",
        )
    ]
