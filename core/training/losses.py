"""A configured loss as a training step calls it, built from a loss plugin and its parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from graftflow.core.config import PluginRef
from graftflow.core.errors import ConfigError
from graftflow.core.models.saved import read_model
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import LossContext, LossSpec
from graftflow.core.validation import plugin_params


class StageLoss(nn.Module):
    """`loss(output, target, inputs=None, **extra)`, whatever the plugin's own signature.

    Losses declared with `uses_inputs` also get the batch's input images (a
    distillation teacher runs on them); the others are called with two arguments.
    `name` is the plugin's name: summaries say which loss `train_loss` and `val_loss` are.
    """

    def __init__(self, spec: LossSpec, module: nn.Module, field: str):
        super().__init__()
        self.name, self.uses_inputs, self.field = spec.name, spec.uses_inputs, field
        self.inner = module

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, inputs: torch.Tensor | None = None, **extra: Any
    ) -> torch.Tensor:
        """`extra` keywords go to the loss as they are (e.g. infonce's `negatives` from a MoCo queue)."""
        if self.uses_inputs:
            if inputs is None:
                raise ConfigError(
                    f"{self.field}: loss '{self.name}' needs the input images, "
                    f"which this training step does not give it"
                )
            return self.inner(output, target, inputs, **extra)
        return self.inner(output, target, **extra)


def build_loss(
    host: PluginHost,
    ref: PluginRef | dict,
    field: str,
    class_names: Sequence[str] = (),
    class_counts: Sequence[int] = (),
    inputs: dict[str, Any] | None = None,
) -> StageLoss:
    """The loss `ref` names, its params checked, with a `LossContext` for losses that ask for one."""
    ref = ref if isinstance(ref, PluginRef) else PluginRef.model_validate(dict(ref))
    spec = host.losses.get(ref.name, f"{field}.name")
    params = plugin_params(spec, ref.params, field)
    if spec.uses_context:
        params["context"] = LossContext(
            field=field,
            num_classes=len(class_names),
            class_names=list(class_names),
            class_counts=[int(c) for c in class_counts],
            make_loss=lambda inner, inner_field: build_loss(
                host, inner, inner_field, class_names, class_counts, inputs
            ),
            load_model=lambda url, model_field: read_model(host, url, model_field),
            inputs=dict(inputs or {}),
        )
    return StageLoss(spec, spec.factory(**params), field)
