"""ResNet family: small-input variants for 8–64 px images plus timm's standard ones.

timm's ResNet stem (7×7 stride-2 conv + max-pool) divides the image by 4
before the first block, which leaves nothing of an 8×8 digit. The small
variants swap it for a 3×3 stride-1 conv, still named `conv1` (with timm's
`bn1`) so timm's group_matcher keeps calling it the stem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from graftflow.core import (
    ConfigError,
    DropParams,
    ModelFamily,
    hookimpl,
    reset_head,
    timm_layer_groups,
    timm_split_forward,
    unknown_variant,
    validate_params,
)

if TYPE_CHECKING:  # timm and torch are imported by `build`: registering the family (a config check) needs neither
    from timm.models.resnet import ResNet
    from torch import nn

# variant → (blocks per stage, channels per stage) for the small-input variants.
SMALL = {
    "tiny": ((1, 1, 1, 1), (16, 32, 64, 128)),
    "small": ((2, 2, 2, 2), (32, 64, 128, 256)),
}
STANDARD = ("resnet18", "resnet34", "resnet50")

VARIANTS = {
    "tiny": "BasicBlock (1,1,1,1), 16–128 channels, 3×3 stride-1 stem; ~0.32M params, 8–64 px images",
    "small": "BasicBlock (2,2,2,2), 32–256 channels, 3×3 stride-1 stem; ~2.8M params, 8–64 px images",
    "resnet18": "timm resnet18 (7×7 stride-2 stem), for ~224 px images; ImageNet weights (model.pretrained)",
    "resnet34": "timm resnet34 (7×7 stride-2 stem), for ~224 px images; ImageNet weights (model.pretrained)",
    "resnet50": "timm resnet50 (Bottleneck), for ~224 px images; ImageNet weights (model.pretrained)",
}


class ResNetParams(DropParams):
    """`model.drop_rate` and `model.drop_path_rate`."""


def _small_resnet(layers, channels, *, num_classes: int, in_chans: int, **params) -> ResNet:
    """timm's ResNet with a full-resolution stem. timm's plain stem is always 64 wide
    (`stem_width` only shapes deep stems), so the new conv keeps that width to fit `bn1`
    and layer1's projection shortcut."""
    from timm.models.resnet import BasicBlock, ResNet
    from torch import nn

    model = ResNet(BasicBlock, layers, channels=channels, num_classes=num_classes, in_chans=in_chans, **params)
    model.conv1 = nn.Conv2d(in_chans, model.bn1.num_features, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as timm inits convs
    model.maxpool = nn.Identity()
    return model


def build(variant: str, *, num_classes: int, in_chans: int, image_size: int, pretrained=None, **params) -> nn.Module:
    """A ResNet, randomly initialised or (standard variants) from `pretrained` weights; image_size is
    unused (global pooling adapts)."""
    params = validate_params(ResNetParams, params)
    if variant in SMALL:
        if pretrained is not None:
            raise ConfigError(f"model.pretrained: resnet '{variant}' has no pretrained weights")
        layers, channels = SMALL[variant]
        return _small_resnet(layers, channels, num_classes=num_classes, in_chans=in_chans, **params)
    if variant in STANDARD:
        from graftflow.core import create_timm_model

        return create_timm_model(variant, num_classes=num_classes, in_chans=in_chans, pretrained=pretrained, **params)
    raise unknown_variant("resnet", variant, VARIANTS)


def pretrained_architecture(variant: str) -> str | None:
    """The standard variants take timm's weights of the same name; the small ones have none."""
    return variant if variant in STANDARD else None


def layer_groups(model: nn.Module):
    """ "stem", "layer1".."layer4", "head" (the fc), from timm's coarse group_matcher."""
    return timm_layer_groups(model)


FAMILY = ModelFamily(
    name="resnet",
    variants=VARIANTS,
    build=build,
    layer_groups=layer_groups,
    reset_head=reset_head,
    capabilities=frozenset({"channels_last"}),
    split_forward=timm_split_forward,
    params_model=ResNetParams,
    description="Residual CNNs (timm); small-input variants keep full resolution for tiny images.",
    pretrained=pretrained_architecture,
)


@hookimpl
def graft_model_families():
    return [FAMILY]
