"""graftflow's engine, and the public API for plugin authors.

Everything a plugin needs is importable from here, and nothing else is
promised to stay where it is: `from graftflow.core import hookimpl, LossSpec`.
The names load lazily, so `import graftflow.core` costs nothing until one is
used (a listing of plugins never has to import torch).

- the contract: `hookimpl`, `CONTRACT_VERSION` (see `graftflow.core.hookspecs`)
- specs a hook returns: `ModelFamily`, `LayerGroup`, `LossSpec`, `DataSource`, `ImageRecord`,
  `AugmentationSpec`, `PretextTask`, `Exporter`, `ModelStore`, `TaskSpec`; what the core hands back: `LossContext`,
  `AugmentContext`, `PretextContext`, `RunInfo`
- tasks (`TaskSpec`): datasets `ArrowImageDataset`, `MaskDataset`, `MultiHotDataset`; masks `rle_encode`,
  `rle_decode`, `encode_mask`, `decode_mask`; for a task's evaluate stage `load_trained(ctx)`,
  `eval_loader(ctx, split, class_names, batch_size)`, `task_selections`, `class_counts`, `save_grid`,
  `StageResult`, `Artifact`; the classifier's parts `family_classifier`, `loss_and_accuracy`, `evaluate_classification`
- `open_model(url, plugins)`: a saved model folder (model.safetensors + model.json) as a module
- `lazy_module(name)`, `deferred(module, attr)`, `forward_to(module, names)`: heavy imports (torch, timm)
  deferred to first use, so a plugin registers without them (see `graftflow.core.lazy`)
- `Params`, the base of a plugin's parameters model; `LossRef` for a loss named inside one
- errors a plugin raises for the user: `GraftError`, `ConfigError`, `PluginError`, `DataError`,
  `TransientDataError`, `StageError`
- model families on timm: `timm_layer_groups`, `timm_split_forward`, `reset_head`,
  `classifier_param_names`, `module_path`, `DropParams`, `validate_params`, `unknown_variant`,
  `timm_capabilities` (+ `TOKEN_INTERFACE`); pretrained weights: `create_timm_model`, `PretrainedWeights`
- fine-tuning methods: `MethodSpec`, `Monitor`, `FinetuneMethod` (+ `MethodContext`), `grad_reverse`, `ramp`,
  `SourceConfig` (a data-source block in a method's parameters)
- using a trained model (notebooks): `load_predictor(run)` → a `Predictor`; it returns `Predictions`
- data sources: `ImageSourceParams`, `FoldersLayout`, `TableLayout`, `Records`, `image_records`,
  `listing`, archives (`archive_kind`, `looks_like_archive`, `safe_extract`) and secrets
  (`lookup_secret`, `secret_ref`, `redact`)

core itself never imports Prefect, `graftflow.plugins` or `graftflow.pipelines`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, tuple[str, str]] = {
    **{n: ("graftflow.core.hookspecs", n) for n in ("hookimpl", "CONTRACT_VERSION")},
    **{
        n: ("graftflow.core.specs", n)
        for n in (
            "AugmentContext",
            "AugmentationSpec",
            "DataSource",
            "Exporter",
            "ImageRecord",
            "LayerGroup",
            "LossContext",
            "LossSpec",
            "MethodSpec",
            "ModelFamily",
            "Monitor",
            "ModelStore",
            "Params",
            "PretextContext",
            "PretextTask",
            "RunInfo",
            "TaskSpec",
        )
    },
    **{n: ("graftflow.core.training.methods", n) for n in ("FinetuneMethod", "MethodContext", "grad_reverse", "ramp")},
    "SourceConfig": ("graftflow.core.config", "SourceConfig"),
    **{
        n: ("graftflow.core.errors", n)
        for n in ("ConfigError", "DataError", "GraftError", "PluginError", "StageError", "TransientDataError")
    },
    "LossRef": ("graftflow.core.config", "LossRef"),
    # what a task plugin's evaluate(ctx) works with (TaskSpec): the model, the split's loader, the stage's result
    **{n: ("graftflow.core.stages.base", n) for n in ("Artifact", "StageResult")},
    **{
        n: ("graftflow.core.stages.inputs", n)
        for n in ("class_counts", "eval_loader", "load_trained", "task_selections")
    },
    "ArrowImageDataset": ("graftflow.core.data.dataset", "ArrowImageDataset"),
    # the built-in tasks' parts (plugins/tasks): the classifier's own code, masks (RLE, the store's PNG), label sets
    "family_classifier": ("graftflow.core.models.build", "family_classifier"),
    "loss_and_accuracy": ("graftflow.core.training.evaluation", "loss_and_accuracy"),
    "evaluate_classification": ("graftflow.core.stages.evaluate", "evaluate_classification"),
    **{n: ("graftflow.core.images", n) for n in ("overlay_masks", "save_grid")},
    **{
        n: ("graftflow.core.data.masks", n)
        for n in ("MaskDataset", "decode_mask", "encode_mask", "rle_decode", "rle_encode")
    },
    "MultiHotDataset": ("graftflow.core.data.label_sets", "MultiHotDataset"),
    "open_model": ("graftflow.core.models.saved", "open_model"),
    **{n: ("graftflow.core.lazy", n) for n in ("deferred", "forward_to", "lazy_module")},
    **{
        n: ("graftflow.core.timm_families", n)
        for n in (
            "DropParams",
            "TOKEN_INTERFACE",
            "classifier_param_names",
            "module_path",
            "reset_head",
            "timm_capabilities",
            "timm_layer_groups",
            "timm_split_forward",
            "unknown_variant",
            "validate_params",
        )
    },
    "PretrainedWeights": ("graftflow.core.pretrained_weights", "PretrainedWeights"),
    "create_timm_model": ("graftflow.core.models.pretrained", "create_timm_model"),
    **{n: ("graftflow.core.inference.predictor", n) for n in ("Predictor", "Predictions", "load_predictor")},
    **{
        n: ("graftflow.core.data.layouts", n)
        for n in ("FoldersLayout", "ImageSourceParams", "Records", "TableLayout", "listing")
    },
    "image_records": ("graftflow.core.data.layouts", "records"),
    **{n: ("graftflow.core.data.archives", n) for n in ("archive_kind", "looks_like_archive", "safe_extract")},
    "lookup_secret": ("graftflow.core.secrets", "lookup"),
    **{n: ("graftflow.core.secrets", n) for n in ("redact", "secret_ref")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'graftflow.core' has no attribute '{name}'") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from graftflow.core.config import LossRef, SourceConfig
    from graftflow.core.data.archives import archive_kind, looks_like_archive, safe_extract
    from graftflow.core.data.dataset import ArrowImageDataset
    from graftflow.core.data.label_sets import MultiHotDataset
    from graftflow.core.data.layouts import FoldersLayout, ImageSourceParams, Records, TableLayout, listing
    from graftflow.core.data.layouts import records as image_records
    from graftflow.core.data.masks import MaskDataset, decode_mask, encode_mask, rle_decode, rle_encode
    from graftflow.core.errors import ConfigError, DataError, GraftError, PluginError, StageError, TransientDataError
    from graftflow.core.hookspecs import CONTRACT_VERSION, hookimpl
    from graftflow.core.images import overlay_masks, save_grid
    from graftflow.core.inference.predictor import Predictions, Predictor, load_predictor
    from graftflow.core.lazy import deferred, forward_to, lazy_module
    from graftflow.core.models.build import family_classifier
    from graftflow.core.models.pretrained import create_timm_model
    from graftflow.core.models.saved import open_model
    from graftflow.core.pretrained_weights import PretrainedWeights
    from graftflow.core.secrets import lookup as lookup_secret
    from graftflow.core.secrets import redact, secret_ref
    from graftflow.core.specs import (
        AugmentationSpec,
        AugmentContext,
        DataSource,
        Exporter,
        ImageRecord,
        LayerGroup,
        LossContext,
        LossSpec,
        MethodSpec,
        ModelFamily,
        ModelStore,
        Monitor,
        Params,
        PretextContext,
        PretextTask,
        RunInfo,
        TaskSpec,
    )
    from graftflow.core.stages.base import Artifact, StageResult
    from graftflow.core.stages.evaluate import evaluate_classification
    from graftflow.core.stages.inputs import class_counts, eval_loader, load_trained, task_selections
    from graftflow.core.timm_families import (
        TOKEN_INTERFACE,
        DropParams,
        classifier_param_names,
        module_path,
        reset_head,
        timm_capabilities,
        timm_layer_groups,
        timm_split_forward,
        unknown_variant,
        validate_params,
    )
    from graftflow.core.training.evaluation import loss_and_accuracy
    from graftflow.core.training.methods import FinetuneMethod, MethodContext, grad_reverse, ramp
