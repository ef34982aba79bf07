"""Vision Transformer family: small variants for tiny images plus timm's standard ones.

Every variant is built for the configured `image_size`: the position embedding
has one slot per patch, so the image size must be a multiple of the patch size,
which is checked here rather than left to a shape error in the first forward.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from graftflow.core import (
    ConfigError,
    DropParams,
    LayerGroup,
    ModelFamily,
    hookimpl,
    reset_head,
    timm_layer_groups,
    timm_split_forward,
    unknown_variant,
    validate_params,
)

if TYPE_CHECKING:  # timm and torch are imported by `build`: registering the family (a config check) needs neither
    from torch import nn

# variant → VisionTransformer kwargs; micro's patch size depends on the image (see _patch_size).
SMALL = {
    "micro": dict(embed_dim=64, depth=4, num_heads=4),
    "tiny": dict(patch_size=4, embed_dim=192, depth=12, num_heads=3),
}
STANDARD = {"vit_tiny_patch16_224": 16, "vit_small_patch16_224": 16, "vit_base_patch16_224": 16}

VARIANTS = {
    "micro": "embed 64, depth 4, 4 heads, patch 4 (2 below 16 px); ~0.2M params, for 8–64 px images",
    "tiny": "embed 192, depth 12, 3 heads, patch 4; ~5.3M params, for 16–64 px images",
    "vit_tiny_patch16_224": "timm ViT-Ti/16 at the configured image size; ImageNet weights (model.pretrained)",
    "vit_small_patch16_224": "timm ViT-S/16 at the configured image size; ImageNet weights (model.pretrained)",
    "vit_base_patch16_224": "timm ViT-B/16 at the configured image size; ImageNet weights (model.pretrained)",
}

# timm's own grouping: the final `norm` joins the last block (timm's MATCH_PREV_GROUP),
# exactly as timm's `param_groups_layer_decay` sees a ViT, so `finetune.layer_decay`
# gives the same per-parameter scales as timm/MAE/BEiT. Anything unmatched (e.g.
# `fc_norm` with average pooling) lands in a group just before the head.
MATCHER = {
    "embed": r"^(?:cls_token|reg_token|pos_embed|patch_embed|norm_pre)",
    "blocks": [(r"^blocks\.(\d+)\.", None), (r"^norm\.", (99999,))],
}


class ViTParams(DropParams):
    """`model.drop_rate` and `model.drop_path_rate`."""


def _patch_size(variant: str, image_size: int) -> int:
    if variant == "micro":
        return 4 if image_size >= 16 else 2
    return SMALL[variant]["patch_size"] if variant in SMALL else STANDARD[variant]


def build(variant: str, *, num_classes: int, in_chans: int, image_size: int, pretrained=None, **params) -> nn.Module:
    """A ViT for `image_size`×`image_size` inputs, randomly initialised or (standard variants) from
    `pretrained` weights, whose position embedding timm resizes to the image size."""
    params = validate_params(ViTParams, params)
    if variant not in SMALL and variant not in STANDARD:
        raise unknown_variant("vit", variant, VARIANTS)
    patch = _patch_size(variant, image_size)
    if image_size < patch or image_size % patch:
        raise ConfigError(
            f"model.variant: vit '{variant}' cuts images into {patch}×{patch} patches, "
            f"so the image size must be a multiple of {patch}; got {image_size}"
        )
    if variant in STANDARD:
        from graftflow.core import create_timm_model

        return create_timm_model(
            variant, num_classes=num_classes, in_chans=in_chans, image_size=image_size, pretrained=pretrained, **params
        )
    if pretrained is not None:
        raise ConfigError(f"model.pretrained: vit '{variant}' has no pretrained weights")
    from timm.models.vision_transformer import VisionTransformer

    common = dict(num_classes=num_classes, in_chans=in_chans, img_size=image_size, **params)
    return VisionTransformer(**{**SMALL[variant], "patch_size": patch, **common})


def pretrained_architecture(variant: str) -> str | None:
    """The standard variants take timm's weights of the same name; the small ones have none."""
    return variant if variant in STANDARD else None


def _rename(label: str) -> str:
    """ "embed" for the stem, "block3" for "blocks.3"."""
    return "embed" if label == "stem" else re.sub(r"^blocks\.(\d+)$", r"block\1", label)


def layer_groups(model: nn.Module):
    """ "embed", "block0".."blockN-1" (the last one holds the final norm too), "head"."""
    groups = timm_layer_groups(model, matcher=MATCHER, rename=_rename)
    # The last block plus the final norm share no single module: name it after its block.
    named = []
    for g in groups:
        match = re.match(r"^blocks\.(\d+)\.", g.params[0])
        named.append(LayerGroup(f"block{match.group(1)}", g.params) if g.name.startswith("group") and match else g)
    return named


FAMILY = ModelFamily(
    name="vit",
    variants=VARIANTS,
    build=build,
    layer_groups=layer_groups,
    reset_head=reset_head,
    capabilities=frozenset({"masked-image-modeling"}),
    split_forward=timm_split_forward,
    params_model=ViTParams,
    description="Vision Transformers (timm), built for the configured image size.",
    pretrained=pretrained_architecture,
)


@hookimpl
def graft_model_families():
    return [FAMILY]
