"""graftflow's engine: the plugin contract, config, data, training, runs.

This module is the public API for plugins: `from core import hookimpl, LossSpec`.
core never imports Prefect, `plugins` or `pipelines`.
"""

from core.errors import ConfigError, DataError, GraftError, PluginError, StageError
from core.hookspecs import hookimpl
from core.specs import (AugmentationSpec, DataSource, Exporter, ImageRecord, LayerGroup, LossSpec, ModelFamily,
                        PretextContext, PretextTask, RunInfo)

__all__ = [
    "AugmentationSpec", "ConfigError", "DataError", "DataSource", "Exporter", "GraftError", "ImageRecord",
    "LayerGroup", "LossSpec", "ModelFamily", "PluginError", "PretextContext", "PretextTask", "RunInfo",
    "StageError", "hookimpl",
]
