"""The `timm` family: any architecture timm knows, by its timm name.

`model: {family: timm, variant: convnext_tiny}` builds `timm.create_model("convnext_tiny")`
for the task's classes and channels (and, for fixed-size models such as ViTs, the
configured image size). Layer groups come from the model's own coarse
`group_matcher`, the grouping timm's layer-wise LR decay uses; capabilities are read
off the architecture (channels_last for conv nets, masked-image-modeling for models
with VisionTransformer's token interface). Every architecture takes pretrained
weights through timm's loader (`model.pretrained`). `graft models [PATTERN]` lists
the names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from pydantic import Field

from graftflow.core import (
    ModelFamily,
    Params,
    hookimpl,
    reset_head,
    timm_capabilities,
    timm_layer_groups,
    validate_params,
)

if TYPE_CHECKING:  # timm and torch are imported when a model is built or a name looked up, not at registration
    from torch import nn


class TimmParams(Params):
    """Regularisation, passed to timm only when set: not every architecture takes both."""

    drop_rate: float | None = Field(None, ge=0, lt=1, description="Dropout before the classifier.")
    drop_path_rate: float | None = Field(None, ge=0, lt=1, description="Stochastic depth (models with blocks).")


class TimmArchitectures(Mapping[str, str]):
    """Every architecture name `timm.list_models()` knows, read when asked (there are over a thousand)."""

    def __getitem__(self, name: str) -> str:
        if name not in self:
            raise KeyError(name)
        return f"timm {name}"

    def __contains__(self, name: object) -> bool:
        import timm

        return isinstance(name, str) and "." not in name and timm.is_model(name)

    def __iter__(self) -> Iterator[str]:
        import timm

        return iter(timm.list_models())

    def __len__(self) -> int:
        import timm

        return len(timm.list_models())


def build(variant: str, *, num_classes: int, in_chans: int, image_size: int, pretrained=None, **params) -> nn.Module:
    from graftflow.core import create_timm_model

    params = {k: v for k, v in validate_params(TimmParams, params).items() if v is not None}
    return create_timm_model(
        variant, num_classes=num_classes, in_chans=in_chans, image_size=image_size, pretrained=pretrained, **params
    )


def layer_groups(model: nn.Module):
    """timm's coarse groups (stem, stages/blocks, head); a model without a group_matcher is one body group."""
    if hasattr(model, "group_matcher"):
        return timm_layer_groups(model)
    return timm_layer_groups(model, matcher={"body": r"^"})


FAMILY = ModelFamily(
    name="timm",
    variants=TimmArchitectures(),
    build=build,
    layer_groups=layer_groups,
    reset_head=reset_head,
    params_model=TimmParams,
    description="Any timm architecture by name (graft models lists them); pretrained weights through timm.",
    pretrained=lambda variant: variant,
    capabilities_of=timm_capabilities,
)


@hookimpl
def graft_model_families():
    return [FAMILY]
