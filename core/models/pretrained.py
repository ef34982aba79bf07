"""Models built from pretrained weights by timm's own loader, and what they took from the file.

A family's build hands the resolved `PretrainedWeights` (see
`graftflow.core.pretrained_weights`) to `create_timm_model`, which passes the file's
tensors to `timm.create_model(pretrained=True)`: timm adapts the stem to the data's
channels (`adapt_input_conv`: a 1-channel stem is the sum of the RGB filters), runs
the architecture's checkpoint filter (a ViT's position embedding resized to the image
size) and drops the 1,000-class classifier. `load_report` says afterwards, key by key,
what came from the file; summary.json records it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from graftflow.core.errors import StageError
from graftflow.core.models.weights import read_weights
from graftflow.core.pretrained_weights import FIELD, PretrainedWeights

if TYPE_CHECKING:
    from torch import nn

    from graftflow.core.specs import ModelFamily


def create_timm_model(
    architecture: str,
    *,
    num_classes: int,
    in_chans: int,
    image_size: int | None = None,
    pretrained: PretrainedWeights | None = None,
    **kwargs: Any,
) -> nn.Module:
    """`timm.create_model` for a family's build: random weights, or `pretrained` through timm's own loader.

    Models with a fixed input size (ViTs, Swin) are built for `image_size`; timm's
    checkpoint filter resizes their position embeddings to it. The classifier is
    always new: when the weights have as many classes as the task, timm would keep
    theirs, so it is reset to what the task starts from.
    """
    import timm

    default = timm.models.get_pretrained_cfg(architecture)
    if image_size and default is not None and default.fixed_input_size:
        kwargs.setdefault("img_size", image_size)
    if pretrained is None:
        return timm.create_model(architecture, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if pretrained.file is None:
        raise StageError(f"{FIELD}: '{pretrained.name}' was not fetched before the model was built")
    state = read_weights(pretrained.file, FIELD)
    try:
        model = timm.create_model(
            architecture,
            pretrained=True,
            pretrained_cfg=_timm_cfg(pretrained),
            pretrained_cfg_overlay={"state_dict": dict(state)},
            num_classes=num_classes,
            in_chans=in_chans,
            **kwargs,
        )
    except RuntimeError as exc:  # load_state_dict's size mismatches: the weights are of another model
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise StageError(f"{FIELD}: '{pretrained.name}' does not fit {architecture}: {first[:300]}") from None
    if num_classes and pretrained.cfg.get("num_classes") == num_classes:
        model.reset_classifier(num_classes)
    return model


def _timm_cfg(weights: PretrainedWeights) -> dict[str, Any]:
    """The cfg as timm's PretrainedCfg takes it: known fields only, sizes as tuples, no other source."""
    from timm.models import PretrainedCfg

    known = {f.name for f in dataclasses.fields(PretrainedCfg)}
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in weights.cfg.items() if k in known}
    for source in ("url", "file", "hf_hub_id", "hf_hub_filename", "source", "state_dict"):
        cfg.pop(source, None)
    cfg["architecture"] = weights.architecture
    return cfg


def load_report(model: nn.Module, weights: PretrainedWeights) -> dict[str, Any]:
    """What the model took from the weights file, by key: loaded, adapted stem, resized, new head, left out."""
    shapes = _file_shapes(weights.file)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    classifiers = weights.cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    head = {k for k in shapes if any(k.startswith(c + ".") for c in classifiers)}
    stem_key = _first_conv_key(weights.cfg)
    stem = None
    if stem_key in shapes and stem_key in own and shapes[stem_key] != own[stem_key]:
        stem = {"key": stem_key, "from_channels": shapes[stem_key][1], "to_channels": own[stem_key][1]}
    common = [k for k in own if k in shapes and k not in head]
    resized = sorted(k for k in common if shapes[k] != own[k] and k != stem_key)
    return {
        **weights.summary(),
        "loaded": len(common),
        "stem_adapted": stem,
        "resized": resized,
        "missing": sorted(k for k in own if k not in shapes or k in head),
        "unexpected": sorted(k for k in shapes if k not in own and k not in head),
        "dropped_head": sorted(head),
    }


def _first_conv_key(cfg: dict[str, Any]) -> str | None:
    first = cfg.get("first_conv")
    if isinstance(first, (list, tuple)):
        first = first[0] if first else None
    return f"{first}.weight" if first else None


def _file_shapes(path: str | None) -> dict[str, tuple[int, ...]]:
    if path is None:
        return {}
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    return {k: tuple(v.shape) for k, v in read_weights(path, FIELD).items()}


def with_pretrained(family: ModelFamily, weights: PretrainedWeights | None) -> ModelFamily:
    """The family, its `build` bound to `weights`: what a pretext task builds its backbone(s) with."""
    if weights is None:
        return family
    return dataclasses.replace(family, build=functools.partial(family.build, pretrained=weights))
