"""Helpers for model families built on timm: part of the public API (`from graftflow.core import ...`).

A family for any timm architecture is a build function plus these. Layer groups
come from timm's own `group_matcher(coarse=True)`, the grouping timm uses for
layer-wise LR decay, so any timm model that defines one gets sensible freezing
units without a hand-written table per architecture.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError

from graftflow.core.errors import ConfigError
from graftflow.core.specs import LayerGroup, Params

if TYPE_CHECKING:  # torch and timm load where a model is at hand: a family registers without them
    import torch
    from torch import nn


class DropParams(Params):
    """Regularisation knobs every timm family accepts (`model.drop_rate` etc. in YAML)."""

    drop_rate: float = Field(0.0, ge=0, lt=1, description="Dropout before the classifier.")
    drop_path_rate: float = Field(0.0, ge=0, lt=1, description="Stochastic depth, linearly increasing per block.")


def validate_params(params_model: type[BaseModel], params: Mapping[str, Any]) -> dict[str, Any]:
    """Check build params even when called outside the core, with the core's one-line messages."""
    try:
        return params_model.model_validate(dict(params)).model_dump()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"model.{loc}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def unknown_variant(family: str, variant: str, variants: Mapping[str, str]) -> ConfigError:
    """The same message the core gives, for builds called without it."""
    return ConfigError(
        f"model.variant: unknown variant '{variant}' of family '{family}'; available: {', '.join(variants)}"
    )


def classifier_param_names(model: nn.Module) -> list[str]:
    """Names of the parameters of `model.get_classifier()` (a module, or a tuple of them)."""
    from torch import nn

    clf = model.get_classifier()
    modules = clf if isinstance(clf, (tuple, list)) else [clf]
    ids = {id(p) for m in modules if isinstance(m, nn.Module) for p in m.parameters()}
    return [name for name, p in model.named_parameters() if id(p) in ids]


def module_path(params: Sequence[str], others: Sequence[str]) -> str:
    """The shortest module path holding all of `params` and none of `others`.

    "layer1" rather than "layer1.0" (one block per stage), "stages.0" rather than
    "stages"; "" when the group has no such module (a stem of loose tensors).
    """
    common = os.path.commonprefix([n.split(".")[:-1] for n in params])
    for k in range(1, len(common) + 1):
        prefix = ".".join(common[:k]) + "."
        if not any(o.startswith(prefix) for o in others):
            return prefix[:-1]
    return ""


def timm_layer_groups(
    model: nn.Module,
    matcher: Mapping[str, Any] | Callable | None = None,
    rename: Callable[[str], str] = lambda label: label,
) -> list[LayerGroup]:
    """Partition every parameter into groups ordered input→head; the last is "head".

    Body groups follow `matcher` (default: the model's coarse group_matcher) and
    are labelled by `module_path` ("stem" for the first group if it has none),
    then passed through `rename` for family-specific names.
    timm sends what its matcher misses (neck norms, the classifier) to a last
    catch-all group; we take the classifier out of it as "head", and whatever
    remains (e.g. convnext's `head.norm`) stays a body group just before it.
    With num_classes=0 the classifier has no parameters and "head" is omitted.
    """
    from timm.models import group_parameters

    head = classifier_param_names(model)
    head_set = set(head)
    all_names = [name for name, _ in model.named_parameters()]
    grouped = group_parameters(model, matcher if matcher is not None else model.group_matcher(coarse=True))
    bodies = [tuple(n for n in grouped[lid] if n not in head_set) for lid in sorted(grouped)]
    bodies = [params for params in bodies if params]
    groups: list[LayerGroup] = []
    used = {"head"}
    for i, params in enumerate(bodies):
        inside = set(params)
        label = module_path(params, [n for n in all_names if n not in inside]) or ("stem" if i == 0 else f"group{i}")
        label = rename(label)
        if label in used:
            label = f"{label}_{i}"
        used.add(label)
        groups.append(LayerGroup(label, params))
    if head:
        groups.append(LayerGroup("head", tuple(head)))
    return groups


def reset_head(model: nn.Module, num_classes: int) -> None:
    """A fresh classifier with `num_classes` outputs (0: features only), timm's way."""
    model.reset_classifier(num_classes)


# timm VisionTransformer's token interface: what token masking (SimMIM) reaches into.
TOKEN_INTERFACE = ("patch_embed", "_pos_embed", "patch_drop", "norm_pre", "blocks", "norm", "num_prefix_tokens")


@lru_cache(maxsize=256)
def timm_capabilities(architecture: str) -> frozenset[str]:
    """What a timm architecture can do, read off a model built on the meta device (no memory, ~0.1 s).

    "channels_last" for conv nets (more convolutions than a ViT's single patch
    projection), "masked-image-modeling" for models with VisionTransformer's token
    interface (`TOKEN_INTERFACE`).
    """
    import timm
    import torch
    from torch import nn

    with torch.device("meta"):
        model = timm.create_model(architecture, pretrained=False, num_classes=0)
    capabilities = set()
    if sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 1:
        capabilities.add("channels_last")
    if all(hasattr(model, name) for name in TOKEN_INTERFACE):
        capabilities.add("masked-image-modeling")
    return frozenset(capabilities)


def timm_split_forward(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled features, logits) of a timm model in one pass: what the classifier reads, and its output.

    timm's `forward_head(..., pre_logits=True)` stops just before the classifier, so
    `get_classifier()` of it equals `model(images)`. Domain adaptation aligns these features.
    """
    features = model.forward_head(model.forward_features(images), pre_logits=True)
    return features, model.get_classifier()(features)
