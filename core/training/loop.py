"""The training loop: one class you can read in one sitting.

`step_fn(images, labels) → loss` is all a stage supplies (a classifier's loss,
a pretext task's objective), so supervised and self-supervised training share
this loop, its precision handling and its checks. Strategies — freezing,
BatchNorm, EMA, validation, best epoch, early stopping, checkpoints, progress —
are callbacks (`graftflow.core.training.callbacks`) called at named events.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from graftflow.core.device import DevicePolicy
from graftflow.core.distributed import mean_over_ranks
from graftflow.core.errors import StageError
from graftflow.core.training.callbacks import Callback, Callbacks

log = logging.getLogger("graft.train")

StepFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class History:
    """Every epoch's record across a stage's phases, and what the run learned about memory."""

    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0  # time spent training (the epochs' own seconds)
    stopped_early: bool = False
    micro_batch: int | None = None  # set once CUDA ran out of memory: gradients are accumulated
    oom_backoffs: list[dict] = field(default_factory=list)


class Loop:
    """One phase of training (e.g. head-only epochs), and the state its callbacks see and may change.

    Callbacks read `model`, `optimizer`, `scheduler`, `history`, `phase`, `epoch`
    (0-based within the phase), `batch` (batches finished in this epoch) and
    `metrics`; they may add fields to `record` (this epoch's history entry) and
    set `should_stop`. A resuming callback positions the loop in `on_fit_start`:
    `start_epoch`, `skip_batches` (finished batches to draw again and skip, so the
    shuffle stays the same), `loss_sum` so far, and `after_skip` (run once they
    are skipped: typically restoring the RNGs).
    """

    def __init__(
        self,
        model: nn.Module,
        step_fn: StepFn,
        loader: Iterable,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        policy: DevicePolicy,
        epochs: int,
        *,
        phase: str,
        history: History,
        callbacks: Callbacks,
        batch_transform: Callable | None = None,
        phase_index: int = 0,
        seed: int = 0,
    ):
        self.model, self.step_fn, self.loader = model, step_fn, loader
        self.optimizer, self.scheduler, self.policy = optimizer, scheduler, policy
        self.epochs, self.phase, self.phase_index, self.seed = epochs, phase, phase_index, seed
        self.history, self.callbacks, self.batch_transform = history, callbacks, batch_transform
        self.gradient_step = GradientStep(optimizer, policy, history)
        self.epoch = self.batch = 0
        self.start_epoch = self.skip_batches = 0
        self.loss_sum: float | torch.Tensor = 0.0
        self.after_skip: Callable[[], None] | None = None
        self.metrics: dict[str, float] = {}
        self.record: dict[str, Any] = {}
        self.should_stop = False

    def run(self) -> History:
        self.callbacks.fire("on_fit_start", self)
        for epoch in range(self.start_epoch, self.epochs):
            self.epoch = epoch
            self.train_epoch()
            if self.should_stop:
                break
        self.callbacks.fire("on_fit_end", self)
        return self.history

    def train_epoch(self) -> None:
        self._reseed()
        self.model.train()
        self.record, self.metrics = {}, {}
        self.callbacks.fire("on_epoch_start", self)
        start = time.perf_counter()
        self.batch, loss_sum = self.skip_batches, torch.full((), float(self.loss_sum), device=self.policy.torch_device)
        for images, labels in self._batches():
            images, labels = self.policy.to_device(images), self.policy.to_device(labels)
            if self.batch_transform is not None:
                images, labels = self.batch_transform(images, labels)
            loss = self.gradient_step(self.step_fn, images, labels)
            self.scheduler.step()
            loss_sum += loss.detach().float()
            self.loss_sum = loss_sum  # a tensor: no device sync unless a checkpoint reads it
            self.batch += 1
            self.history.steps += 1
            if self.history.steps % 50 == 0:
                check_finite(loss_sum, self.history.steps, self.optimizer)
            self.callbacks.fire("on_step_end", self)
        self._end_epoch(loss_sum, time.perf_counter() - start)

    def _end_epoch(self, loss_sum: torch.Tensor, seconds: float) -> None:
        if self.batch == 0:
            raise StageError(f"{self.phase}: the training data gave no batch (fewer images than batch_size?)")
        check_finite(loss_sum, self.history.steps, self.optimizer)
        self.metrics = {"train_loss": float(mean_over_ranks(loss_sum)) / self.batch}
        self.callbacks.fire("on_validate", self)
        if hasattr(self.scheduler, "epoch_end"):  # plateau scheduling reads the monitored metric
            self.scheduler.epoch_end(self.metrics)
        self.history.seconds += seconds
        self.history.epochs.append(
            {
                "epoch": len(self.history.epochs) + 1,
                "phase": self.phase,
                "seconds": round(seconds, 3),
                **self.record,
                **self.metrics,
            }
        )
        self.skip_batches, self.loss_sum = 0, 0.0
        self.callbacks.fire("on_epoch_end", self)

    def _reseed(self) -> None:
        """Each epoch's shuffle depends on (seed, epoch) alone, so a resumed run draws the same batches."""
        epoch = len(self.history.epochs)
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # a distributed shard: a new permutation every epoch
            sampler.set_epoch(epoch)
        generator = getattr(self.loader, "generator", None)
        if generator is not None:
            generator.manual_seed(self.seed * 1_000_003 + epoch)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        skip = self.skip_batches
        for images, labels in self.loader:
            if skip:
                skip -= 1
                if skip == 0 and self.after_skip is not None:
                    self.after_skip()
                    self.after_skip = None
                continue
            yield images, labels


class GradientStep:
    """One optimizer step on a batch, in micro-batches once CUDA memory has run out.

    Out-of-memory anywhere in the step (forward, backward or the optimizer's own
    step) halves the micro-batch and takes the same batch again; micro-batch
    losses are weighted by their share of the batch, so the accumulated gradient
    is the full batch's and the effective batch size and learning rate are
    unchanged. The smaller micro-batch is kept from then on (`history.micro_batch`).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, policy: DevicePolicy, history: History):
        self.optimizer, self.policy, self.history = optimizer, policy, history
        self.scaler = policy.make_scaler()

    def __call__(self, step_fn: StepFn, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        while True:
            size = len(images)
            micro = min(self.history.micro_batch or size, size)
            try:
                loss = self.accumulate(step_fn, images, labels, micro)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                return loss
            except torch.OutOfMemoryError:
                self.back_off(micro, size)

    def accumulate(self, step_fn: StepFn, images: torch.Tensor, labels: torch.Tensor, micro: int) -> torch.Tensor:
        """Gradients of the batch's mean loss, accumulated over micro-batches of `micro` images."""
        self.optimizer.zero_grad(set_to_none=True)
        size = len(images)
        if micro >= size:  # the usual case: one pass, without the weighting ops and their backward
            with self.policy.autocast():
                loss = step_fn(images, labels)
            self.scaler.scale(loss).backward()
            return loss.detach().float()
        total = torch.zeros((), device=images.device)
        for start in range(0, size, micro):
            x, y = images[start : start + micro], labels[start : start + micro]
            with self.policy.autocast():
                loss = step_fn(x, y) * (len(x) / size)
            self.scaler.scale(loss).backward()
            total += loss.detach().float()
        return total

    def back_off(self, micro: int, size: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.policy.device_type == "cuda":
            torch.cuda.empty_cache()
        step = self.history.steps + 1
        if micro <= 1:
            raise StageError(
                f"out of memory at step {step} even with a micro-batch of 1; "
                "use a smaller model, image_size or precision bf16/fp16"
            ) from None
        self.history.micro_batch = micro // 2
        self.history.oom_backoffs.append({"step": step, "batch": size, "micro_batch": self.history.micro_batch})
        log.warning(
            "out of memory at step %d: micro-batch %d → %d, accumulating %d micro-batches per step",
            step,
            micro,
            self.history.micro_batch,
            -(-size // self.history.micro_batch),
        )


def train(
    model: nn.Module,
    step_fn: StepFn,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    policy: DevicePolicy,
    epochs: int,
    *,
    phase: str,
    callbacks: Iterable[Callback | None] = (),
    history: History | None = None,
    batch_transform: Callable | None = None,
    seed: int = 0,
) -> History:
    """One phase with these callbacks: the short way to run the loop."""
    history = history if history is not None else History()
    return Loop(
        model,
        step_fn,
        loader,
        optimizer,
        scheduler,
        policy,
        epochs,
        phase=phase,
        history=history,
        callbacks=Callbacks(callbacks),
        batch_transform=batch_transform,
        seed=seed,
    ).run()


def check_finite(loss_sum: torch.Tensor, step: int, optimizer: torch.optim.Optimizer) -> None:
    value = float(loss_sum)
    if not math.isfinite(value):
        lrs = ", ".join(dict.fromkeys(f"{g.get('layer_group', '?')}={g['lr']:.3g}" for g in optimizer.param_groups))
        raise StageError(
            f"non-finite loss by step {step} (learning rates: {lrs}); lower the LR "
            "(the last complete checkpoint is kept)"
        )


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, policy: DevicePolicy) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, on CPU) and labels for every batch of `loader`."""
    model.eval()
    outputs, targets = [], []
    for images, labels in loader:
        with policy.autocast():
            logits = model(policy.to_device(images))
        outputs.append(logits.float().cpu())
        targets.append(labels)
    if not outputs:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(outputs), torch.cat(targets)
