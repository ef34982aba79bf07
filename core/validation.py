"""Check a config against what the plugins registered, before any stage runs.

pydantic checks shapes; this checks meaning: that every named plugin exists,
that its parameters fit its params model, and that the source is reachable.
Every problem is one line that starts with the field path.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from core.config import PipelineConfig, format_validation_error
from core.errors import ConfigError, GraftError
from core.plugin_manager import PluginHost


def plugin_params(spec: Any, params: dict[str, Any], field: str) -> dict[str, Any]:
    """Validate `params` against the spec's params model; returns them with defaults filled."""
    model: type[BaseModel] | None = getattr(spec, "params_model", None)
    if model is None:
        if params:
            names = ", ".join(sorted(params))
            raise ConfigError(f"{field}: {type(spec).__name__} '{spec.name}' takes no parameters, got {names}")
        return {}
    try:
        return model.model_validate(params).model_dump()
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix=field)) from None


def validate_config(config: PipelineConfig, host: PluginHost, stages: list[str] | None = None) -> None:
    """Raise one ConfigError listing every problem, one line each."""
    problems: list[str] = []

    def check(fn, *args) -> Any:
        try:
            return fn(*args)
        except GraftError as exc:
            problems.append(str(exc))
            return None

    family = check(host.families.get, config.model.family, "model.family")
    if family is not None:
        if config.model.variant not in family.variants:
            problems.append(
                f"model.variant: unknown variant '{config.model.variant}' of family '{family.name}'; "
                f"available: {', '.join(family.variants)}"
            )
        check(plugin_params, family, config.model.params, "model")

    source = check(host.sources.get, config.data.source.kind, "data.source.kind")
    if source is not None:
        params = check(plugin_params, source, config.data.source.params, "data.source")
        if params is not None and (stages is None or "acquire" in stages):
            check(source.check, params)

    for section in ("augment.train", "augment.eval"):
        for i, ref in enumerate(getattr(config.augment, section.split(".")[1])):
            aug = check(host.augmentations.get, ref.name, f"{section}[{i}].name")
            if aug is not None:
                check(plugin_params, aug, ref.params, f"{section}[{i}]")

    pretext = check(host.pretexts.get, config.pretrain.pretext.name, "pretrain.pretext")
    if pretext is not None:
        check(plugin_params, pretext, config.pretrain.pretext.params, "pretrain.pretext")
        if family is not None and pretext.families is not None and family.name not in pretext.families:
            problems.append(
                f"pretrain.pretext: '{pretext.name}' does not support model family '{family.name}'; "
                f"it supports {', '.join(sorted(pretext.families))}"
            )

    for section in ("pretrain", "finetune"):
        ref = getattr(config, section).loss
        loss = check(host.losses.get, ref.name, f"{section}.loss.name")
        if loss is not None:
            check(plugin_params, loss, ref.params, f"{section}.loss")

    for i, fmt in enumerate(config.export.formats):
        check(host.exporters.get, fmt, f"export.formats[{i}]")

    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))
