"""Training callbacks: the objects a fine-tuning recipe is made of, called by the loop at named events.

The loop (`graftflow.core.training.loop`) only knows how to take optimizer
steps. Everything a recipe varies — which layer groups train, BatchNorm, weight
EMA, validation, best-epoch selection, early stopping, checkpoints, progress,
and the fine-tuning methods that add loss terms or data — is a `Callback`
with some of these methods, called in list order (Lightning's and fastai's
callbacks are the model):

    on_fit_start(loop)    once per phase, before its first epoch (a resumed phase is positioned here)
    on_epoch_start(loop)  after `model.train()`, before the epoch's first batch
    on_step_end(loop)     after every optimizer and scheduler step
    on_validate(loop)     after the epoch's last step: add entries to `loop.metrics`
    on_epoch_end(loop)    once the epoch's record is in `loop.history`: react to it
    on_fit_end(loop)      once per phase, after its last epoch or an early stop

Order matters where one reads what another writes: metrics come from
`on_validate` so every `on_epoch_end` sees them, and the checkpoint goes last
so it holds what the others changed. A callback whose state a resumed run needs
sets `state_key` and implements `state_dict()` / `load_state_dict()`; the
checkpoint saves it under that key (tensors in safetensors, the rest as JSON).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from graftflow.core.training.loop import Loop

EVENTS = ("on_fit_start", "on_epoch_start", "on_step_end", "on_validate", "on_epoch_end", "on_fit_end")


class Callback:
    """A strategy the loop calls; override the events you need (all default to nothing)."""

    state_key: str | None = None  # set it to have the state saved in checkpoints

    def on_fit_start(self, loop: Loop) -> None: ...

    def on_epoch_start(self, loop: Loop) -> None: ...

    def on_step_end(self, loop: Loop) -> None: ...

    def on_validate(self, loop: Loop) -> None: ...

    def on_epoch_end(self, loop: Loop) -> None: ...

    def on_fit_end(self, loop: Loop) -> None: ...

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON-able values) a resumed run needs; only called when `state_key` is set."""
        return {}, {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
        """Put back what `state_dict` returned."""


class Callbacks:
    """The callbacks of a stage, in order; `None` entries (strategies switched off) are dropped."""

    def __init__(self, callbacks: Iterable[Callback | None]):
        self.items = [c for c in callbacks if c is not None]
        keys = [c.state_key for c in self.items if c.state_key]
        if len(keys) != len(set(keys)):
            raise ValueError(f"two callbacks save their state under the same key: {keys}")

    def fire(self, event: str, loop: Loop) -> None:
        for handler in self._handlers(event):
            handler(loop)

    def _handlers(self, event: str) -> list:
        """The bound methods that do something at `event`, found once: `on_step_end` fires every step,
        and most callbacks leave it as the base class's no-op."""
        cache = self.__dict__.setdefault("_by_event", {})
        if event not in cache:
            base = getattr(Callback, event)
            bound = [getattr(c, event) for c in self.items]
            cache[event] = [fn for fn in bound if getattr(fn, "__func__", None) is not base]
        return cache[event]

    def __iter__(self):
        return iter(self.items)
