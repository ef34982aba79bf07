"""Checkpoint and resume a training stage: the callback that makes a killed run end with the same weights.

What is saved: the trained module's state (a pretext module whole: projection
heads, a momentum encoder, MoCo's queue), the optimizer, the phase's schedule,
the history, every RNG, the loop's position (epoch, batch, loss so far) and the
state of every callback with a `state_key` (weight EMA, the best epoch's
weights). Tensors go to safetensors, the rest to JSON: nothing that runs code
on load. Restoring all of it, plus the per-epoch reseeding of the shuffle and
drawing the finished batches of a half-done epoch again, makes a resumed CPU
run end with exactly the weights of a run that never stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from graftflow.core.training.callbacks import Callback
from graftflow.core.training.checkpointing import (
    Checkpointer,
    flatten_optimizer,
    restore_rng,
    rng_state,
    unflatten_optimizer,
)
from graftflow.core.training.loop import History, check_finite

if TYPE_CHECKING:
    from graftflow.core.training.loop import Loop


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


class Checkpoint(Callback):
    """Saves every `checkpointer.every` steps and at every epoch end; `restore()` puts the latest back.

    `others` are the stage's other callbacks: those with a `state_key` are saved too.
    Place it last in the callback list, so what it saves includes what the others
    did this step or epoch. Only the `writer` (rank 0) writes; `on_saved(path, step)`
    is told of every complete checkpoint (the `graft_on_checkpoint` event).
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        history: History,
        others: Iterable[Callback | None] = (),
        writer: bool = True,
        on_saved: Callable[[str, int], None] | None = None,
    ):
        self.store, self.model, self.optimizer, self.history = checkpointer, model, optimizer, history
        self.stateful = [c for c in others if c is not None and c.state_key]
        self.writer, self.on_saved = writer, on_saved
        self.resumed_from_step: int | None = None
        self._pending: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None

    # -- resume ----------------------------------------------------------------
    def restore(self) -> int | None:
        """Load the latest complete checkpoint; returns the phase index to continue (None: nothing to resume)."""
        latest = self.store.latest()
        if latest is None:
            return None
        step, tensors, state = latest
        self.model.load_state_dict(_unprefixed("model", tensors))
        self.optimizer.load_state_dict(unflatten_optimizer(tensors, state["optimizer"]))
        for callback in self.stateful:
            key = callback.state_key
            callback.load_state_dict(_unprefixed(f"callback.{key}", tensors), state["callbacks"][key])
        h = state["history"]
        self.history.epochs, self.history.steps, self.history.seconds = h["epochs"], h["steps"], h["seconds"]
        self.history.stopped_early, self.history.micro_batch = h["stopped_early"], h["micro_batch"]
        self.history.oom_backoffs = h["oom_backoffs"]
        self.resumed_from_step, self._pending = step, (tensors, state)
        return state["phase"]

    def on_fit_start(self, loop: Loop) -> None:
        """Position the phase the checkpoint was taken in; RNGs come back once its finished batches are redrawn."""
        if self._pending is None or self._pending[1]["phase"] != loop.phase_index:
            return
        tensors, state = self._pending
        self._pending = None
        loop.scheduler.load_state_dict(state["scheduler"])
        pos = state["position"]
        loop.start_epoch, loop.skip_batches, loop.loss_sum = pos["epoch"], pos["batch"], pos["loss_sum"]

        def put_back_rngs() -> None:
            restore_rng(tensors, state["rng"])

        if pos["batch"]:
            loop.after_skip = put_back_rngs
        else:
            put_back_rngs()

    # -- save ------------------------------------------------------------------
    def on_step_end(self, loop: Loop) -> None:
        if self.store.due(loop.history.steps):
            self.save(loop, {"epoch": loop.epoch, "batch": loop.batch, "loss_sum": float(loop.loss_sum)})

    def on_epoch_end(self, loop: Loop) -> None:
        self.save(loop, {"epoch": loop.epoch + 1, "batch": 0, "loss_sum": 0.0})

    def save(self, loop: Loop, position: dict[str, Any]) -> None:
        check_finite(torch.tensor(position["loss_sum"]), self.history.steps, self.optimizer)  # never save a NaN
        if not self.writer:
            return
        tensors = _prefixed("model", self.model.state_dict())
        opt_tensors, opt_meta = flatten_optimizer(self.optimizer.state_dict())
        tensors.update(opt_tensors)
        values = {}
        for callback in self.stateful:
            cb_tensors, values[callback.state_key] = callback.state_dict()
            tensors.update(_prefixed(f"callback.{callback.state_key}", cb_tensors))
        rng_tensors, rng_meta = rng_state()
        tensors.update(rng_tensors)
        h = self.history
        state = {
            "phase": loop.phase_index,
            "position": position,
            "scheduler": loop.scheduler.state_dict(),
            "optimizer": opt_meta,
            "rng": rng_meta,
            "step": h.steps,
            "callbacks": values,
            "history": {
                "epochs": h.epochs,
                "steps": h.steps,
                "seconds": h.seconds,
                "stopped_early": h.stopped_early,
                "micro_batch": h.micro_batch,
                "oom_backoffs": h.oom_backoffs,
            },
        }
        path = self.store.save(h.steps, tensors, state)
        if self.on_saved is not None:
            self.on_saved(path, h.steps)

    def clear(self) -> None:
        """The stage succeeded: its checkpoints are no longer needed."""
        if self.writer:
            self.store.clear()
