"""The plugin contract: every hook graftflow calls, one documented spec each.

A plugin is any module (or object) with functions named like these and marked
with `pluggy.HookimplMarker("graft")`. It never needs to import more of
graftflow than `core` (for the spec dataclasses).

Registration hooks return lists of specs; the core gathers them into
registries where a duplicate name is an error naming both plugins. Event hooks
are observers: they see what happened and never change training; a failing
observer is logged and skipped.
"""

from __future__ import annotations

import pluggy

PROJECT = "graft"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration hooks -------------------------------------------------------


@hookspec
def graft_model_families():
    """Return a list of `core.ModelFamily`: architectures with their layer groups."""


@hookspec
def graft_losses():
    """Return a list of `core.LossSpec`: classification, pretext or auxiliary losses."""


@hookspec
def graft_data_sources():
    """Return a list of `core.DataSource`, selected by `data.source.kind`."""


@hookspec
def graft_augmentations():
    """Return a list of `core.AugmentationSpec`, named in `augment.train/eval`."""


@hookspec
def graft_pretext_tasks():
    """Return a list of `core.PretextTask`, selected by `pretrain.pretext`."""


@hookspec
def graft_exporters():
    """Return a list of `core.Exporter`, named in `export.formats`."""


# --- event hooks (observers) ----------------------------------------------------


@hookspec
def graft_on_stage_start(run, stage):
    """A stage of `run` (a `core.RunInfo`) is starting."""


@hookspec
def graft_on_stage_end(run, stage, status, seconds, outputs):
    """A stage ended with `status` ("completed" or "failed") after `seconds`."""


@hookspec
def graft_on_epoch_end(run, stage, epoch, metrics):
    """An epoch of a training stage ended; `metrics` maps names to floats."""


@hookspec
def graft_on_checkpoint(run, stage, path):
    """A checkpoint was written at `path` (a local path or URL)."""
