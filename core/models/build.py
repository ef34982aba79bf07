"""A model from its description, and the layer groups that freezing and learning rates work on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from graftflow.core.config import PipelineConfig
from graftflow.core.errors import PluginError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.pretrained_weights import PretrainedWeights
from graftflow.core.specs import LayerGroup, ModelFamily
from graftflow.core.tasks import task_for_model, task_ref_of
from graftflow.core.validation import plugin_params


def build_model(host: PluginHost, meta: dict[str, Any], pretrained: PretrainedWeights | None = None) -> nn.Module:
    """A fresh model from a `model.json` description (family, variant, params, classes, channels, size).

    With `pretrained` the family builds it from those weights (timm's loader; see
    `graftflow.core.models.pretrained`); it is passed only then, so a family that
    takes no pretrained weights never sees the argument.
    """
    family = host.families.get(meta["family"], "model.family")
    params = plugin_params(family, meta.get("params", {}), "model")
    if pretrained is not None:
        params["pretrained"] = pretrained
    task = task_for_model(host, meta)
    task_params = plugin_params(task, task_ref_of(meta).params, "task")
    return task.build_model(family, meta, params, **task_params)


def family_classifier(family: ModelFamily, meta: dict[str, Any], params: dict[str, Any], **_: Any) -> nn.Module:
    """The family's own model with a `num_classes`-way classifier: the head of classification tasks."""
    return family.build(
        meta["variant"],
        num_classes=meta["num_classes"],
        in_chans=meta["in_chans"],
        image_size=meta["image_size"],
        **params,
    )


def model_meta(config: PipelineConfig, class_names: Sequence[str], task: bool = True) -> dict[str, Any]:
    """What `model.json` records: enough to rebuild the architecture and to preprocess its inputs.

    `task=False`: a backbone of the family as a classifier (the pretrain stage's), whatever `task:` says.
    """
    return {
        "family": config.model.family,
        "variant": config.model.variant,
        "params": config.model.params,
        "task": config.task.model_dump(mode="json") if task else {"name": "classification"},
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "in_chans": config.data.channels,
        "image_size": config.data.image_size,
        "mean": config.data.mean,
        "std": config.data.std,
        # what predicting needs besides the weights: the eval transforms and the plugins that provide them
        "eval_transforms": [ref.model_dump(mode="json") for ref in config.augment.eval],
        "plugins": list(config.plugins),
    }


def layer_groups(host: PluginHost, family_name: str, model: nn.Module, task: str | None = None) -> list[LayerGroup]:
    """The task's layer groups of the model (a classifier's: the family's), checked to partition every
    parameter exactly once."""
    family = host.families.get(family_name)
    groups = host.tasks.get(task or "classification", "task.name").layer_groups(family, model)
    check_partition(model, groups, family_name)
    return groups


def head_keys(model: nn.Module, groups: Sequence[LayerGroup]) -> set[str]:
    """State-dict keys of the head: every key under a module that owns a head parameter."""
    prefixes = {p.rsplit(".", 1)[0] + "." for p in groups[-1].params} if groups and groups[-1].name == "head" else set()
    return {k for k in model.state_dict() if any(k.startswith(pre) for pre in prefixes)}


def check_partition(model: nn.Module, groups: Sequence[LayerGroup], family: str) -> None:
    """Every parameter in exactly one group: a family whose groups miss one would leave it untrained."""
    names = [n for n, _ in model.named_parameters()]
    seen: dict[str, str] = {}
    for group in groups:
        for p in group.params:
            if p in seen:
                raise PluginError(
                    f"model family '{family}': parameter '{p}' is in groups '{seen[p]}' and '{group.name}'"
                )
            seen[p] = group.name
    missing = [n for n in names if n not in seen]
    if missing:
        raise PluginError(f"model family '{family}': layer_groups leave out parameter '{missing[0]}'")
