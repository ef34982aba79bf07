"""Segmentation models: segmentation-models-pytorch decoders (U-Net, FPN) over a timm encoder (`tu-<name>`).

The encoder is the family's timm architecture (`ModelFamily.pretrained(variant)`
names it; the `timm` family's variants are timm names), built by smp as a timm
features-only network, so its state-dict keys are timm's own: a classifier
backbone of the same architecture (this run's pretrain stage, `model.weights`,
`model.pretrained` through timm's loader) loads into `encoder.model.*`.
Layer groups run input→head: the encoder's stages (timm's feature stages), then
the decoder, then the segmentation head, so `lr: [lo, hi]`, `layer_decay` and
`freeze_epochs` mean what they mean for a classifier.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from graftflow.core import ConfigError, LayerGroup

DECODERS = ("unet", "fpn")
ENCODER = "encoder.model."


def encoder_name(family, variant: str) -> str:
    """The timm architecture of `variant`, as smp names a timm encoder: `tu-<name>`."""
    arch = family.pretrained(variant) if family.pretrained is not None else None
    if not arch:
        raise ConfigError(
            f"model.variant: '{variant}' of family '{family.name}' is no timm architecture, which task "
            f"segmentation needs as its encoder; use family timm (e.g. variant resnet18) or a timm variant"
        )
    return f"tu-{arch}"


def build(family, meta: dict[str, Any], params: dict[str, Any], **task) -> nn.Module:
    """smp's U-Net or FPN, `num_classes` mask channels, over the family's timm encoder."""
    import segmentation_models_pytorch as smp

    pretrained = params.pop("pretrained", None)
    decoder = task.get("decoder", "unet")
    kwargs: dict[str, Any] = {"encoder_depth": task.get("encoder_depth", 5)}
    if task.get("decoder_channels"):
        key = "decoder_channels" if decoder == "unet" else "decoder_segmentation_channels"
        value = task["decoder_channels"]
        kwargs[key] = tuple(value) if decoder == "unet" else int(value[-1])
        if decoder == "fpn":
            kwargs["decoder_pyramid_channels"] = int(value[0])
    cls = smp.Unet if decoder == "unet" else smp.FPN
    model = cls(
        encoder_name=encoder_name(family, meta["variant"]),
        encoder_weights=None,
        in_channels=meta["in_chans"],
        classes=meta["num_classes"],
        **kwargs,
    )
    if pretrained is not None:
        load_pretrained_encoder(model, family, meta, pretrained)
    return model


def load_pretrained_encoder(model: nn.Module, family, meta: dict[str, Any], pretrained) -> None:
    """`model.pretrained` through timm's loader (stem adapted to the channels), copied into the encoder."""
    from graftflow.core import create_timm_model

    arch = encoder_name(family, meta["variant"]).removeprefix("tu-")
    donor = create_timm_model(arch, num_classes=0, in_chans=meta["in_chans"], pretrained=pretrained)
    encoder = model.encoder.model
    own = encoder.state_dict()
    state = {k: v for k, v in donor.state_dict().items() if k in own and own[k].shape == v.shape}
    encoder.load_state_dict(state, strict=False)


def backbone_key(key: str) -> str:
    """A timm backbone's state-dict key → the same tensor in the segmentation model's encoder."""
    return ENCODER + key


def layer_groups(family, model: nn.Module) -> list[LayerGroup]:
    """Encoder stages (a group ends at each of timm's feature stages), decoder, head."""
    encoder = model.encoder.model
    stage_ends = set(encoder.feature_info.module_name()) if hasattr(encoder, "feature_info") else set()
    groups: list[LayerGroup] = []
    pending: list[str] = []
    for name, child in encoder.named_children():
        pending += [f"{ENCODER}{name}.{p}" for p, _ in child.named_parameters()]
        if name in stage_ends and pending:
            groups.append(LayerGroup(f"encoder.{name}", tuple(pending)))
            pending = []
    if pending:
        groups.append(LayerGroup("encoder.rest", tuple(pending)))
    for group, module in (("decoder", "decoder"), ("head", "segmentation_head")):
        part = getattr(model, module)
        groups.append(LayerGroup(group, tuple(f"{module}.{p}" for p, _ in part.named_parameters())))
    covered = {p for g in groups for p in g.params}
    rest = tuple(n for n, _ in model.named_parameters() if n not in covered)
    if rest:  # e.g. an encoder's own parameters outside its children: trained with the decoder
        groups.insert(-2, LayerGroup("encoder.other", rest))
    return [g for g in groups if g.params]
