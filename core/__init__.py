"""graftflow's engine: the plugin contract, config, data, training, runs.

This module is the public API for plugins: `from graftflow.core import hookimpl, LossSpec`.
core never imports Prefect, `plugins` or `pipelines`.
"""

from graftflow.core.errors import ConfigError, DataError, GraftError, PluginError, StageError, TransientDataError
from graftflow.core.hookspecs import hookimpl
from graftflow.core.config import LossRef
from graftflow.core.data.archives import archive_kind, looks_like_archive, safe_extract
from graftflow.core.data.layouts import FoldersLayout, ImageSourceParams, Records, TableLayout, listing
from graftflow.core.data.layouts import records as image_records
from graftflow.core.secrets import lookup as lookup_secret
from graftflow.core.secrets import redact, secret_ref
from graftflow.core.specs import (AugmentContext, AugmentationSpec, DataSource, Exporter, ImageRecord, LayerGroup, LossContext, LossSpec,
                        ModelFamily, PretextContext, PretextTask, RunInfo)

__all__ = [
    "AugmentContext", "AugmentationSpec", "ConfigError", "DataError", "DataSource", "Exporter", "GraftError", "ImageRecord",
    "LayerGroup", "LossContext", "LossRef", "LossSpec", "ModelFamily", "PluginError", "PretextContext", "PretextTask", "RunInfo",
    "StageError", "hookimpl",
    # data sources: layouts, archives, secrets
    "FoldersLayout", "ImageSourceParams", "Records", "TableLayout", "TransientDataError", "archive_kind",
    "image_records", "listing", "looks_like_archive", "lookup_secret", "redact", "safe_extract", "secret_ref",
]
