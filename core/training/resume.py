"""What a training stage's checkpoint holds, and how to put it back.

Weights, optimizer, weight EMA, best-epoch weights and every RNG go into the
safetensors file; phase, loop position, schedule, history and the best-epoch
bookkeeping into JSON. Restoring them all, plus the per-epoch reseeding of the
shuffle, makes a resumed CPU run end with exactly the weights of a run that
never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from graftflow.core.training.checkpointing import Checkpointer, flatten_optimizer, restore_rng, rng_state, unflatten_optimizer
from graftflow.core.training.loop import History, LoopPosition, check_finite
from graftflow.core.training.selection import BestTracker


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


@dataclass
class Resumed:
    phase: int
    position: LoopPosition
    scheduler: dict
    restore_rng: callable
    step: int


class TrainingState:
    def __init__(self, checkpointer: Checkpointer, model: nn.Module, optimizer: torch.optim.Optimizer,
                 history: History, ema: nn.Module | None = None, best: BestTracker | None = None,
                 writer: bool = True):
        self.ckpt, self.model, self.optimizer, self.history = checkpointer, model, optimizer, history
        self.ema, self.best, self.writer = ema, best, writer

    def save(self, phase: int, pos: LoopPosition, scheduler) -> None:
        loss_sum = float(pos.loss_sum)
        check_finite(torch.tensor(loss_sum), self.history.steps, self.optimizer)  # never checkpoint a NaN
        tensors = _prefixed("model", self.model.state_dict())
        opt_tensors, opt_meta = flatten_optimizer(self.optimizer.state_dict())
        tensors.update(opt_tensors)
        if self.ema is not None:
            tensors.update(_prefixed("ema", self.ema.state_dict()))
        if self.best is not None and self.best.state is not None:
            tensors.update(_prefixed("best", self.best.state))
        rng_tensors, rng_meta = rng_state()
        tensors.update(rng_tensors)
        h = self.history
        state = {
            "phase": phase, "position": {"epoch": pos.epoch, "batch": pos.batch, "loss_sum": loss_sum},
            "scheduler": scheduler.state_dict(), "optimizer": opt_meta, "rng": rng_meta, "step": h.steps,
            "history": {"epochs": h.epochs, "steps": h.steps, "seconds": h.seconds, "stopped_early": h.stopped_early,
                        "micro_batch": h.micro_batch, "oom_backoffs": h.oom_backoffs},
            "best": None if self.best is None else {"best": self.best.best, "best_epoch": self.best.best_epoch,
                                                    "since_best": self.best.since_best},
        }
        if self.writer:
            self.ckpt.save(h.steps, tensors, state)

    def on_position(self, phase: int, scheduler):
        """The loop's `on_position` callback: a checkpoint every N steps and at every epoch end."""
        def callback(pos: LoopPosition, epoch_end: bool) -> None:
            if epoch_end or self.ckpt.due(self.history.steps):
                self.save(phase, pos, scheduler)
        return callback

    def restore(self) -> Resumed | None:
        latest = self.ckpt.latest()
        if latest is None:
            return None
        step, tensors, state = latest
        self.model.load_state_dict(_unprefixed("model", tensors))
        self.optimizer.load_state_dict(unflatten_optimizer(tensors, state["optimizer"]))
        if self.ema is not None:
            self.ema.load_state_dict(_unprefixed("ema", tensors))
        if self.best is not None and state["best"] is not None:
            self.best.best, self.best.best_epoch = state["best"]["best"], state["best"]["best_epoch"]
            self.best.since_best = state["best"]["since_best"]
            best_state = _unprefixed("best", tensors)
            self.best.state = best_state or None
        h = state["history"]
        self.history.epochs, self.history.steps, self.history.seconds = h["epochs"], h["steps"], h["seconds"]
        self.history.stopped_early, self.history.micro_batch = h["stopped_early"], h["micro_batch"]
        self.history.oom_backoffs = h["oom_backoffs"]
        pos = state["position"]
        return Resumed(phase=state["phase"], position=LoopPosition(pos["epoch"], pos["batch"], pos["loss_sum"]),
                       scheduler=state["scheduler"], restore_rng=lambda: restore_rng(tensors, state["rng"]), step=step)
