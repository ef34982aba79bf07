"""Saying what training does: a log line per epoch, and the observers' epoch event."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from graftflow.core.training.callbacks import Callback

if TYPE_CHECKING:
    from graftflow.core.training.loop import Loop

log = logging.getLogger("graft.train")


class EpochLog(Callback):
    """One log line per epoch: phase, epoch, metrics and seconds."""

    def on_epoch_end(self, loop: Loop) -> None:
        record = loop.history.epochs[-1]
        log.info(
            "%s epoch %d: %s (%.1fs)",
            loop.phase,
            record["epoch"],
            ", ".join(f"{k}={v:.4f}" for k, v in loop.metrics.items()),
            record["seconds"],
        )


class EpochObservers(Callback):
    """Tells the observer plugins (`graft_on_epoch_end`) about every epoch: `notify(epoch, metrics)`."""

    def __init__(self, notify: Callable[[int, Mapping[str, float]], None]):
        self.notify = notify

    def on_epoch_end(self, loop: Loop) -> None:
        self.notify(loop.history.epochs[-1]["epoch"], dict(loop.metrics))
