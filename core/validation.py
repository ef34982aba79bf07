"""Check a config against what the plugins registered, before any stage runs.

pydantic checks shapes; this checks meaning: that every named plugin exists,
that its parameters fit its params model, and that the source is reachable.
Every problem is one line that starts with the field path.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from graftflow.core.config import LossRef, PipelineConfig, PluginRef, format_validation_error
from graftflow.core.errors import ConfigError, GraftError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.pretrained_weights import auto_inputs, resolve_pretrained
from graftflow.core.specs import AugmentationSpec, ModelFamily


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


@dataclass(frozen=True)
class PlannedAugmentation:
    """One entry of an `augment` section, checked: its spec, parameters (defaults filled) and where it runs."""

    field: str
    spec: AugmentationSpec
    params: dict[str, Any]
    placement: str  # "sample" (DataLoader workers) or "batch" (the training device)
    has_sample_form: bool


def augmentation_plan(
    host: PluginHost, refs: Sequence[PluginRef], section: str, device_type: str = "cpu", training: bool = True
) -> list[PlannedAugmentation]:
    """Where each entry of `section` runs, or a ConfigError naming the entry that cannot.

    An entry may say `placement: sample|batch|auto` (default auto). auto runs an op on the
    device when the spec is batch-only, or when it has a batch form, the device is CUDA
    and every later entry runs batched too (batch ops run after all per-sample ops, so
    the order of the list is kept). Eval sections (`training=False`) run per sample only.
    """
    resolved = []
    for i, ref in enumerate(refs):
        field = f"{section}[{i}]"
        spec = host.augmentations.get(ref.name, f"{field}.name")
        params = dict(ref.params)
        want = params.pop("placement", "auto")
        can_sample, can_batch = spec.placement == "sample", spec.placement == "batch" or spec.batch_factory is not None
        if want not in ("auto", "sample", "batch"):
            raise ConfigError(f"{field}.placement: expected auto, sample or batch, got {want!r}")
        if want == "sample" and not can_sample:
            raise ConfigError(f"{field}.placement: '{spec.name}' runs on whole batches only (placement batch)")
        if want == "batch" and not can_batch:
            raise ConfigError(f"{field}.placement: '{spec.name}' has no batch form; use placement sample")
        if not training and (want == "batch" or not can_sample):
            raise ConfigError(f"{field}: '{spec.name}' runs on training batches only; {section} runs per sample")
        resolved.append((field, spec, want, can_sample, can_batch, plugin_params(spec, params, field)))
    batch_tail = True  # every later entry runs batched
    places = [""] * len(resolved)
    for j in range(len(resolved) - 1, -1, -1):
        _, _, want, can_sample, can_batch, _ = resolved[j]
        if want == "auto":
            want = (
                "batch"
                if not can_sample or (can_batch and device_type == "cuda" and batch_tail and training)
                else "sample"
            )
        places[j] = want
        batch_tail = batch_tail and want == "batch"
    first_batch = next((j for j, place in enumerate(places) if place == "batch"), len(places))
    for j in range(first_batch + 1, len(places)):
        if places[j] == "sample":
            field, spec = resolved[j][:2]
            raise ConfigError(
                f"{field}: '{spec.name}' runs per sample after batch op '{resolved[first_batch][1].name}'; "
                f"batch ops run after every per-sample op: move it before them, or run it batched"
            )
    return [
        PlannedAugmentation(field, spec, params, place, can_sample)
        for (field, spec, _, can_sample, _, params), place in zip(resolved, places, strict=True)
    ]


def check_source(source: Any, params: dict[str, Any], field: str) -> None:
    """`source.check(params)`; sources name their fields under `data.source`, which is re-rooted at `field`."""
    try:
        source.check(params)
    except GraftError as exc:
        if field == "data.source" or not str(exc).startswith("data.source"):
            raise
        raise type(exc)(field + str(exc).removeprefix("data.source")) from None


def check_loss(host: PluginHost, ref: PluginRef, field: str, kind: str | None, hint: str = "") -> dict[str, Any]:
    """The loss exists, is of `kind`, and its parameters fit (losses named inside them too)."""
    loss = host.losses.get(ref.name, f"{field}.name")
    if kind is not None and loss.kind != kind:
        fitting = ", ".join(n for n, e in host.losses.entries() if e.spec.kind == kind) or "none registered"
        article = "an" if loss.kind[0] in "aeiou" else "a"
        raise ConfigError(
            f"{field}.name: '{loss.name}' is {article} {loss.kind} loss; {field} needs a {kind} loss ({fitting}){hint}"
        )
    params = plugin_params(loss, ref.params, field)
    model = getattr(loss, "params_model", None)
    for name, info in model.model_fields.items() if model is not None else ():
        types = get_args(info.annotation) or (info.annotation,)
        if any(isinstance(t, type) and issubclass(t, LossRef) for t in types) and params.get(name):
            check_loss(host, LossRef.model_validate(params[name]), f"{field}.{name}", kind)
    return params


LISTED_VARIANTS = 40  # a family with more (the `timm` family) is named by close matches instead


def unknown_variant_message(family: ModelFamily, variant: str) -> str:
    """One line: the family's variants, or for a family of hundreds the closest names and `graft models`."""
    head = f"model.variant: unknown variant '{variant}' of family '{family.name}'"
    names = list(family.variants)
    if len(names) <= LISTED_VARIANTS:
        return f"{head}; available: {', '.join(names)}"
    arch = variant.split(".", 1)[0]
    if "." in variant and arch in family.variants:
        return f"{head}; the variant is the architecture ('{arch}'): name the weights in model.pretrained"
    close = difflib.get_close_matches(variant, names, n=5, cutoff=0.6)
    hint = f"close: {', '.join(close)}; " if close else ""
    return f"{head}; {hint}`graft models PATTERN` lists the {len(names)} names"


def check_pretrained(config: PipelineConfig, family: ModelFamily, stages: list[str] | None) -> None:
    """model.pretrained names weights the variant takes, that are cached or reachable; `auto` inputs have a source.

    The weights are looked for only when a stage that builds from them will run
    (pretrain, finetune); their cfg (for `auto`) is read whatever runs.
    """
    model = config.model
    if model.pretrained not in (None, False, "") and model.weights:
        raise ConfigError(
            "model.pretrained: model.weights is set too; give one of them (the file's weights, or the pretrained ones)"
        )
    if stages is None or {"pretrain", "finetune"} & set(stages):
        resolve_pretrained(family, model.variant, model.pretrained, fetch=False)
    auto_inputs(config, family)


def check_predict(config: PipelineConfig) -> None:
    """The predict stage has images to read and a file format it can write."""
    cfg, problems = config.predict, []
    if not cfg.inputs and cfg.split is None:
        problems.append(
            "predict.inputs: name the images to score (files, folders, globs, URLs, archives) or set predict.split"
        )
    if cfg.out and not cfg.out.split("?", 1)[0].lower().endswith((".csv", ".parquet")):
        problems.append(f"predict.out: '{cfg.out}' must end in .csv or .parquet")
    if problems:
        raise ConfigError("\n".join(problems))


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
            problems.append(unknown_variant_message(family, config.model.variant))
        else:
            check(check_pretrained, config, family, stages)
        check(plugin_params, family, config.model.params, "model")

    sources = [("data.source", config.data.source)]
    if config.pretrain.source is not None:
        sources.append(("pretrain.source", config.pretrain.source))
    for field, source_cfg in sources:
        source = check(host.sources.get, source_cfg.kind, f"{field}.kind")
        if source is not None:
            params = check(plugin_params, source, source_cfg.params, field)
            if params is not None and (stages is None or "acquire" in stages):
                check(check_source, source, params, field)

    soft_targets = None
    for section in ("augment.train", "augment.eval"):
        plan = check(
            augmentation_plan,
            host,
            getattr(config.augment, section.split(".")[1]),
            section,
            "cpu",
            section == "augment.train",
        )
        soft_targets = soft_targets or next((s.spec.name for s in plan or () if s.spec.soft_targets), None)

    pretext = check(host.pretexts.get, config.pretrain.pretext.name, "pretrain.pretext")
    if pretext is not None:
        check(plugin_params, pretext, config.pretrain.pretext.params, "pretrain.pretext")
        if family is not None and pretext.families is not None and family.name not in pretext.families:
            problems.append(
                f"pretrain.pretext: '{pretext.name}' does not support model family '{family.name}'; "
                f"it supports {', '.join(sorted(pretext.families))}"
            )

    if pretext is not None:
        ref = config.pretrain.loss
        if pretext.loss_kind is None and ref is not None:
            problems.append(
                f"pretrain.loss: pretext '{pretext.name}' computes its own objective and takes no loss; "
                f"remove pretrain.loss"
            )
        elif pretext.loss_kind is not None:
            ref = ref or PluginRef(name=pretext.default_loss or "")
            check(
                check_loss,
                host,
                ref,
                "pretrain.loss",
                pretext.loss_kind,
                f", or leave it unset for {pretext.name}'s default" if pretext.default_loss else "",
            )
    check(check_loss, host, config.finetune.loss, "finetune.loss", "classification")
    if soft_targets is not None:
        refs = [("finetune.loss", config.finetune.loss)]
        if pretext is not None and pretext.needs_labels and pretext.loss_kind == "classification":
            refs.append(("pretrain.loss", config.pretrain.loss or PluginRef(name=pretext.default_loss or "")))
        for field, ref in refs:
            loss = check(host.losses.get, ref.name, f"{field}.name")
            if loss is not None and not loss.soft_targets:
                problems.append(
                    f"{field}.name: '{loss.name}' takes class indices only, but augment.train has "
                    f"'{soft_targets}', which makes soft targets; use a loss that accepts them "
                    f"("
                    + (", ".join(n for n, e in host.losses.entries() if e.spec.soft_targets) or "none registered")
                    + ")"
                )

    for i, fmt in enumerate(config.export.formats):
        check(host.exporters.get, fmt, f"export.formats[{i}]")
    if stages is not None and "predict" in stages:
        check(check_predict, config)

    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))
