"""Check a config against what the plugins registered, before any stage runs.

pydantic checks shapes; this checks meaning: that every named plugin exists,
that its parameters fit its params model, and that the source is reachable.
Every problem is one line that starts with the field path.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from graftflow.core.config import (
    LossRef,
    PipelineConfig,
    PluginRef,
    SourceConfig,
    apply_overrides,
    format_validation_error,
    override_keys,
    parse_partial,
    pretrains,
    read_yaml,
    resolve_paths,
    within,
)
from graftflow.core.errors import ConfigError, GraftError
from graftflow.core.model_stores import unserved_store_message
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.pretrained_weights import auto_inputs, resolve_pretrained
from graftflow.core.specs import AugmentationSpec, ModelFamily
from graftflow.core.tasks import finetune_loss, monitor_problem


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
    host: PluginHost,
    refs: Sequence[PluginRef],
    section: str,
    device_type: str = "cpu",
    training: bool = True,
    masks: bool = False,
) -> list[PlannedAugmentation]:
    """Where each entry of `section` runs, or a ConfigError naming the entry that cannot.

    An entry may say `placement: sample|batch|auto` (default auto). auto runs an op on the
    device when the spec is batch-only, or when it has a batch form, the device is CUDA
    and every later entry runs batched too (batch ops run after all per-sample ops, so
    the order of the list is kept). Eval sections (`training=False`) run per sample only.

    `masks=True` (a task whose targets are masks): batch ops get the masks as their labels,
    so only batch forms that declare what they do with them run batched
    (`AugmentationSpec.batch_masks`: "joint" cuts the mask with the image, "image-only"
    leaves it as it is); a "refused" one runs per sample under auto (where torchvision
    moves image and mask together) and is a one-line error where it can only run batched.
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
        if masks and can_batch and spec.batch_masks == "refused":
            if want == "batch" or not can_sample:
                raise ConfigError(
                    f"{field}: '{spec.name}' cannot run on batches of masks (its batch form would change the "
                    f"images and not their masks)" + ("; use placement sample" if can_sample else "")
                )
            can_batch = False
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


def check_pretrained(config: PipelineConfig, family: ModelFamily, stages: list[str] | None) -> PipelineConfig:
    """model.pretrained names weights the variant takes, that are cached or reachable; `auto` inputs have a source.

    The weights are looked for only when a stage that builds from them will run
    (pretrain, finetune); their cfg (for `auto`) is read whatever runs. Returns the
    config with `auto` resolved, so the model's input size is checked with the real values.
    """
    model = config.model
    if model.pretrained not in (None, False, "") and model.weights:
        raise ConfigError(
            "model.pretrained: model.weights is set too; give one of them (the file's weights, or the pretrained ones)"
        )
    if stages is None or {"pretrain", "finetune"} & set(stages):
        resolve_pretrained(family, model.variant, model.pretrained, fetch=False)
    return auto_inputs(config, family)


def check_predict(config: PipelineConfig, host: PluginHost) -> None:
    """The predict stage has images to read, a file format it can write, and a store for a model URI."""
    cfg, problems = config.predict, []
    if cfg.model and (unserved := unserved_store_message(host, cfg.model, "predict.model")):
        problems.append(unserved)
    if not cfg.inputs and cfg.split is None:
        problems.append(
            "predict.inputs: name the images to score (files, folders, globs, URLs, archives) or set predict.split"
        )
    if cfg.out and not cfg.out.split("?", 1)[0].lower().endswith((".csv", ".parquet")):
        problems.append(f"predict.out: '{cfg.out}' must end in .csv or .parquet")
    if problems:
        raise ConfigError("\n".join(problems))


def finetune_method(host: PluginHost, config: PipelineConfig) -> Any:
    """The `FinetuneMethod` object `finetune.method` names, its parameters checked."""
    spec = host.methods.get(config.finetune.method.name, "finetune.method.name")
    return spec.build(**plugin_params(spec, config.finetune.method.params, "finetune.method"))


@dataclass(frozen=True)
class MethodTraits:
    """What a fine-tuning method needs from the rest of the config (MethodSpec's fields, contract 2.5)."""

    needs_target: bool
    needs_features: bool
    extends_head: bool


def method_traits(host: PluginHost, config: PipelineConfig) -> MethodTraits:
    """The traits of the method `finetune.method` names, its parameters checked, without building it.

    A spec that declares its traits is taken at its word (building a method imports torch); one
    written before contract 2.5 leaves them None, and the method is built to read them off it.
    """
    spec = host.methods.get(config.finetune.method.name, "finetune.method.name")
    params = plugin_params(spec, config.finetune.method.params, "finetune.method")
    names = ("needs_target", "needs_features", "extends_head")
    declared = {n: getattr(spec, n, None) for n in names}
    if any(v is None for v in declared.values()):
        built = spec.build(**params)
        declared = {n: getattr(built, n, False) if declared[n] is None else declared[n] for n in names}
    return MethodTraits(**{n: bool(v) for n, v in declared.items()})


def pretext_store_problem(config: PipelineConfig, host: PluginHost, pretext: Any, task: Any) -> str | None:
    """A labelled pretext (`needs_labels`, e.g. supervised) cannot pretrain on the run's own store when
    the task reads label-set or mask stores (no class per image); self-supervised pretexts read their images."""
    pre = config.pretrain
    if pretext is None or not pretext.needs_labels or not pretrains(config) or pre.source is not None:
        return None
    if "single" in task.store_targets:
        return None
    kinds = " or ".join(sorted(task.store_targets))
    unlabelled = ", ".join(n for n, e in host.pretexts.entries() if not e.spec.needs_labels)
    return (
        f"pretrain.pretext: '{pretext.name}' trains on one class per image, and task '{task.name}' reads {kinds} "
        f"stores; use a self-supervised pretext ({unlabelled}) or a labelled pretrain.source"
    )


def method_problems(config: PipelineConfig, method: Any, family: Any) -> list[str]:
    """What the chosen method needs from the rest of the config, one line per thing missing."""
    ft, name, problems = config.finetune, config.finetune.method.name, []
    if method.needs_features and family is not None and family.split_forward is None:
        problems.append(
            f"finetune.method: '{name}' aligns features, and model family '{family.name}' does not "
            f"expose them (its ModelFamily has no split_forward)"
        )
    if method.extends_head and ft.head != "extend":
        problems.append(f"finetune.head: method '{name}' keeps the pretrained classes; set finetune.head: extend")
    if ft.head == "extend":
        pre = config.pretrain
        if not pretrains(config) or pre.pretext.name != "supervised":
            problems.append(
                "finetune.head: extend appends new classes to the pretrained head, which needs supervised "
                "pretraining in the same run (pretrain.enabled: true, pretrain.pretext: supervised)"
            )
        elif pre.classes and ft.classes and set(pre.classes) & set(ft.classes):
            both = ", ".join(sorted(set(pre.classes) & set(ft.classes)))
            problems.append(
                f"finetune.classes: with head: extend the new classes must differ from pretrain.classes; "
                f"both have {both}"
            )
        elif pre.source is not None:
            problems.append("finetune.head: extend needs the old classes in the main data; pretrain.source is set")
    return problems


def validate_config(config: PipelineConfig, host: PluginHost, stages: list[str] | None = None) -> None:
    """Raise one ConfigError listing every problem, one line each."""
    problems = config_problems(config, host, stages)
    if problems:
        raise ConfigError("\n".join(problems))


def config_problems(
    config: PipelineConfig,
    host: PluginHost,
    stages: list[str] | None = None,
    before_model_check: Callable[[list[str]], None] | None = None,
) -> list[str]:
    """Every problem of a parsed config against the registered plugins, one line each.

    The model's dry run on the meta device (`check_model_input`) is the one check that imports
    torch (seconds), so it runs last, its line put back where the model's problems go;
    `before_model_check(problems so far)` is called just before it (`load_checked`'s `on_parsed`).
    """
    problems: list[str] = []
    model_check: tuple[int, tuple] | None = None  # (where its line goes, check_model_input's arguments)

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
            resolved = None
        else:
            resolved = check(check_pretrained, config, family, stages)  # auto sizes from the weights
        model_params = check(plugin_params, family, config.model.params, "model")
        if model_params is not None and config.model.variant in family.variants:
            model_check = (len(problems), (family, resolved or config, model_params))

    method = check(method_traits, host, config)
    if method is not None:
        problems.extend(method_problems(config, method, family))
    sources = [("data.source", config.data.source)]
    if config.pretrain.source is not None:
        sources.append(("pretrain.source", config.pretrain.source))
    if method is not None and config.finetune.method.params.get("target"):
        sources.append(("finetune.method.target", SourceConfig.model_validate(config.finetune.method.params["target"])))
    for field, source_cfg in sources:
        source = check(host.sources.get, source_cfg.kind, f"{field}.kind")
        if source is not None:
            params = check(plugin_params, source, source_cfg.params, field)
            if params is not None and (stages is None or "acquire" in stages):
                check(check_source, source, params, field)

    soft_targets = None
    masks = config.task.name in host.tasks and "mask" in host.tasks.get(config.task.name).store_targets
    for section in ("augment.train", "augment.eval"):
        plan = check(
            augmentation_plan,
            host,
            getattr(config.augment, section.split(".")[1]),
            section,
            "cpu",
            section == "augment.train",
            masks,
        )
        if not masks:  # a mask task's CutMix pastes mask boxes: its targets stay masks, not class probabilities
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
    task = check(host.tasks.get, config.task.name, "task.name")
    if task is not None:
        check(plugin_params, task, config.task.params, "task")
        check(check_loss, host, finetune_loss(config, task), "finetune.loss", task.loss_kind)
        method_spec = host.methods.get(config.finetune.method.name) if method is not None else None
        problems.append(monitor_problem(task, config.finetune.monitor, method_spec) or "")
        problems.append(pretext_store_problem(config, host, pretext, task) or "")
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
        check(check_predict, config, host)
    if before_model_check is not None:
        before_model_check([p for p in problems if p])
    if model_check is not None:
        where, args = model_check
        try:
            check_model_input(*args)
        except GraftError as exc:
            problems.insert(where, str(exc))
    return list(dict.fromkeys(line for p in problems if p for line in p.splitlines()))


_INPUT_CHECKED: dict[tuple, str | None] = {}


def check_model_input(family: ModelFamily, config: PipelineConfig, params: dict[str, Any]) -> None:
    """The family builds the variant for the data's channels and image size, and a batch goes through.

    Built and run on torch's meta device: no memory, no weights, milliseconds, so
    a size the family refuses (a ViT patch that does not divide the image, an
    image too small for the network's strides) is one line before any work. An
    image size or channel count of "auto" (taken from pretrained weights) is
    checked when the weights are read.
    """
    size, channels = config.data.image_size, config.data.channels
    if not isinstance(size, int) or not isinstance(channels, int):
        return
    key = (id(family), config.model.variant, channels, size, repr(sorted(params.items())))
    if key not in _INPUT_CHECKED:
        _INPUT_CHECKED[key] = _dry_run(family, config.model.variant, channels, size, params)
    if _INPUT_CHECKED[key]:
        raise ConfigError(_INPUT_CHECKED[key])


def _dry_run(family: ModelFamily, variant: str, channels: int, size: int, params: dict[str, Any]) -> str | None:
    import torch

    what = f"model '{family.name}' variant '{variant}'"
    try:
        with torch.device("meta"):
            model = family.build(variant, num_classes=2, in_chans=channels, image_size=size, **params)
    except GraftError as exc:
        return str(exc).splitlines()[0]
    except Exception as exc:
        if _meta_limit(exc):
            return None
        return f"model.variant: {what} cannot be built for {channels}-channel {size} px images: {_first_line(exc)}"
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, channels, size, size, device="meta"))
    except Exception as exc:
        if _meta_limit(exc):
            return None
        return (
            f"data.image_size: {what} cannot take {channels}×{size}×{size} images ({_first_line(exc)}); "
            f"use a larger data.image_size or another variant"
        )
    return None


def _meta_limit(exc: BaseException) -> bool:
    """What the meta device cannot do (an op without a meta kernel, `.item()`): nothing learned, so the
    family is trusted here and its code meets the real tensors when the stage runs."""
    return isinstance(exc, NotImplementedError) or "meta" in str(exc).lower()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --- from a config file to a checked config ------------------------------------------


@dataclass(frozen=True)
class Checked:
    """A config that passed every check, and the plugin host it was checked against."""

    config: PipelineConfig
    host: PluginHost


def _params_lookup(host: PluginHost):
    """field, plugin name → the plugin's params model (for the paths it names)."""

    def lookup(field: str, name: str):
        registry = host.sources if field.endswith("source") else host.losses if field.endswith("loss") else None
        if registry is None or name not in registry:
            return None
        return getattr(registry.get(name), "params_model", None)

    return lookup


def load_checked(
    path: str | Path,
    overrides: Sequence[str] = (),
    stages: list[str] | None = None,
    problems: Sequence[str] = (),
    checks: Sequence[Callable[[PipelineConfig], list[str]]] = (),
    on_parsed: Callable[[PipelineConfig], None] | None = None,
) -> Checked:
    """Read, override, resolve and check a config file; every problem at once, one line each.

    `problems` found by the caller (e.g. `--stages`) are reported with the config's, and so
    are those of `checks(config)` (e.g. that `--run-id` names a run).
    `on_parsed(config)` is called once the config has parsed and passed every check but the
    model's dry run (which imports torch): `graft run` starts its Prefect server there, so the
    server overlaps that import and the rest of the run's start, and a config with a mistake
    never pays for it.
    An invalid field is set back to its default for the checks that follow, so the
    README's `--set model.family=resnt --set finetune.lr=-1` names both mistakes.
    Relative paths written in the file resolve from its folder; those given with
    `--set` from the current folder.
    """
    found = list(problems)

    def fail(*more: str) -> ConfigError:
        return ConfigError("\n".join(dict.fromkeys([*found, *more])))

    try:
        data = read_yaml(path)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    base, typed = Path(path).parent, override_keys(overrides)
    found += apply_overrides(data, overrides)
    resolve_paths(data, base, skip=typed)  # core fields and plugin files: the plugins are not loaded yet
    config, invalid, dropped = parse_partial(data)
    found += invalid
    if config is None:
        raise fail()
    try:
        host = PluginHost(config.plugins)
    except GraftError as exc:
        raise fail(str(exc)) from None
    before = copy.deepcopy(data)
    resolve_paths(data, base, _params_lookup(host), skip=typed)  # plugin parameters that name files
    if data != before:
        config, _, dropped = parse_partial(data)
    for extra in checks:  # first: one may make s3:// reachable (storage credentials) for the checks below
        found += extra(config)

    def parsed(so_far: list[str]) -> None:
        if on_parsed is not None and not found and not [p for p in so_far if not _under(p, dropped)]:
            on_parsed(config)

    found += [p for p in config_problems(config, host, stages, parsed) if not _under(p, dropped)]
    if found:
        raise fail()
    return Checked(config, host)


def _under(problem: str, dropped: Sequence[str]) -> bool:
    """Whether a problem is about a field already reported (and set back to its default)."""
    field = problem.split(":", 1)[0]
    return any(within(field, d) for d in dropped)
