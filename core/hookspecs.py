"""The plugin contract: every hook graftflow calls, when, where, and what it does with the result.

A plugin is a module (or any object) with functions named like the hooks below,
marked with `graftflow.core.hookimpl`. It needs nothing from graftflow beyond
the public API in `graftflow.core` (specs, the params base model, errors, helpers).
An implementation may take any subset of a hook's parameters, by name.

Contract version
    `CONTRACT_VERSION` is (major, minor). A minor release adds hooks, spec fields
    with defaults or event parameters; a major one changes or removes something.
    A plugin may say which major it was written for with a module attribute
    `graft_contract = 2`: the host refuses it, naming it, when the majors differ,
    instead of failing mid-run.

Registration hooks (`graft_model_families` ... `graft_exporters`, `graft_model_stores`)
    Called once by every `PluginHost`: at the start of each command, of each
    stage's Prefect task and of every rank of a distributed stage. They must be
    cheap and free of side effects (return specs; import heavy libraries inside
    the spec's factories, not at module import). Each returns a list of specs of
    one class; the result is used: specs are gathered into registries by name,
    in registration order (entry points, then config `plugins:`, then
    `GRAFT_PLUGINS`). A duplicate name is an error naming both plugins; a
    wrong type or an exception is an error naming the plugin and the hook, at
    start-up, before any stage runs.

Event hooks (`graft_on_*`)
    Observers: trackers, notifiers, progress. Their results are ignored and they
    never change training. An observer that raises is logged and skipped; the
    run goes on. They are called in pluggy's order: the last registered first,
    `tryfirst=True` / `trylast=True` move one. Stage events fire in the process
    that runs the stage (once per stage, also when the stage runs distributed);
    epoch and checkpoint events fire on rank 0 only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from graftflow.core.specs import (
        AugmentationSpec,
        DataSource,
        Exporter,
        LossSpec,
        MethodSpec,
        ModelFamily,
        ModelStore,
        PretextTask,
        RunInfo,
        TaskSpec,
    )

PROJECT = "graft"
# 2.1: graft_model_stores, graft_finetune_methods; 2.2: ModelFamily.pretrained and capabilities_of;
# 2.3: graft_tasks (TaskSpec) and LossSpec kinds of tasks; 2.4: TaskSpec.gallery;
# 2.5: MethodSpec.needs_target / needs_features / extends_head (a config checked without building the
#      method); Monitor(name, mode) in TaskSpec.monitors and MethodSpec.monitors; AugmentationSpec.batch_masks
CONTRACT_VERSION = (2, 5)
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration hooks -------------------------------------------------------


@hookspec
def graft_model_families() -> list[ModelFamily]:
    """Model families: architectures with their variants and layer groups.

    Selected by `model.family`; `model.variant` must be one of the family's
    variants. Built on timm? `graftflow.core.timm_layer_groups` gives the layer
    groups from timm's own `group_matcher`.
    """


@hookspec
def graft_tasks() -> list[TaskSpec]:
    """Tasks: what the model predicts (classification, multilabel, segmentation, ...), selected by `task`.

    Added in contract 2.3. The fine-tune, evaluate, export and predict stages call into
    the selected task for targets, the model's head, losses, metrics and prediction
    writers; `task: classification` (the default) is today's single-label classifier.
    """


@hookspec
def graft_losses() -> list[LossSpec]:
    """Losses, selected by name in `finetune.loss`, `pretrain.loss` or inside another loss's parameters.

    `LossSpec.kind` says where one fits: classification objectives, pretext
    losses on embeddings, or auxiliary terms.
    """


@hookspec
def graft_data_sources() -> list[DataSource]:
    """Data sources, selected by `data.source.kind` (and `pretrain.source.kind`).

    `check` runs before any stage; `load` runs in the acquire stage only.
    """


@hookspec
def graft_augmentations() -> list[AugmentationSpec]:
    """Augmentations, named in `augment.train` / `augment.eval`; per-sample ops, batch ops, or both."""


@hookspec
def graft_pretext_tasks() -> list[PretextTask]:
    """Ways to pretrain a backbone, selected by `pretrain.pretext`."""


@hookspec
def graft_finetune_methods() -> list[MethodSpec]:
    """Fine-tuning methods, selected by `finetune.method` (`standard` is the default).

    A method adds to the standard recipe: a second data stream, loss terms with their
    own weight schedules, extra trainable modules, metrics; the fine-tune stage trains
    through it under every strategy (discriminative LRs, freezing, resume, DDP).
    """


@hookspec
def graft_exporters() -> list[Exporter]:
    """Exporters, named in `export.formats`; each verifies its artifact against eager."""


@hookspec
def graft_model_stores() -> list[ModelStore]:
    """Model stores: where a model URI with the store's scheme, e.g. `models:/NAME@champion`, is fetched from.

    Added in contract 2.1. `ModelStore.name` is the URI scheme it serves. Code that reads a
    model by URI (`graft predict`, the predict stage, `load_predictor`) goes through
    `graftflow.core.model_stores.resolve_model_uri(host, uri)`, which calls the store's
    `fetch(uri, dest)` in the calling process (any rank) only when a URI has that
    scheme; the folder it returns (model.safetensors + model.json) is what is loaded.
    A fetch that fails raises a `GraftError` naming the URI.
    """


# --- event hooks (observers) ----------------------------------------------------


@hookspec
def graft_on_stage_start(run: RunInfo, stage: str) -> None:
    """A stage of `run` is about to run (after its inputs were found, before any of its work).

    :param run: the run: name, id, URL and config (never the model).
    :param stage: the stage's name in the stage table, e.g. "finetune".
    """


@hookspec
def graft_on_stage_end(run: RunInfo, stage: str, status: str, seconds: float, outputs: Mapping[str, str]) -> None:
    """A stage ended; on success its folder is already published whole.

    :param status: "completed", "skipped" or "failed".
    :param seconds: wall time of the stage's own work.
    :param outputs: output name → path relative to the stage folder (empty when it failed).
    """


@hookspec
def graft_on_epoch_end(run: RunInfo, stage: str, epoch: int, metrics: Mapping[str, float]) -> None:
    """An epoch of a training stage ended, after validation (rank 0 only).

    :param epoch: 1-based, counted across the stage's phases (head-only epochs included).
    :param metrics: e.g. `train_loss`, `val_loss` (the stage's own loss on the val split), `val_accuracy`.
    """


@hookspec
def graft_on_checkpoint(run: RunInfo, stage: str, path: str, step: int) -> None:
    """A resumable checkpoint is complete at `path` (a local path or URL) after `step` optimizer steps (rank 0 only).

    Fired after the checkpoint's COMPLETE marker is written, so `path` can be copied as it is.
    """
