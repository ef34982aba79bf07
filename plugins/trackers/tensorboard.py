"""TensorBoard tracker: every epoch's metrics as TensorBoard scalars, one event-file folder per run.

Off by default: it has no `graft.plugins` entry point. Turn it on per config,

    plugins: [graftflow.plugins.trackers.tensorboard]

(or `GRAFT_PLUGINS=graftflow.plugins.trackers.tensorboard`). Scalars are tagged `<stage>/<metric>`
(e.g. `finetune/val_accuracy`) with the epoch as step, and written to `<run>/tensorboard/`
when the run lives on local disk, else to `$GRAFT_TENSORBOARD_DIR` (default
`.graft/tensorboard`)/`<name>/<run-id>`. View with `tensorboard --logdir <that folder>`.
Like every observer it never changes training; a failure is logged and skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from graftflow.core import hookimpl

__version__ = "1.0"

_writers: dict[str, object] = {}


def log_dir(run) -> Path:
    url = run.url
    if "://" not in url:
        return Path(url) / "tensorboard"
    return Path(os.environ.get("GRAFT_TENSORBOARD_DIR", ".graft/tensorboard")) / run.name / run.run_id


def _writer(run):
    from torch.utils.tensorboard import SummaryWriter

    key = run.url
    if key not in _writers:
        _writers[key] = SummaryWriter(log_dir=str(log_dir(run)))
    return _writers[key]


@hookimpl
def graft_on_epoch_end(run, stage, epoch, metrics):
    writer = _writer(run)
    for name, value in metrics.items():
        if isinstance(value, (int, float)):
            writer.add_scalar(f"{stage}/{name}", float(value), global_step=epoch)
    writer.flush()


@hookimpl
def graft_on_stage_end(run, stage, status, seconds, outputs):
    writer = _writer(run)
    writer.add_scalar(f"stages/{stage}_seconds", float(seconds), global_step=0)
    writer.add_text(f"stages/{stage}", f"{status} in {seconds:.1f}s")
    writer.flush()
