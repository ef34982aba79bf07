"""The training loop: one function you can read in one sitting.

`step_fn(images, labels) → loss` is all a stage supplies (a classifier's
cross-entropy, a pretext task's objective), so supervised and self-supervised
training share this loop, its precision handling and its checks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from graftflow.core.device import DevicePolicy
from graftflow.core.distributed import mean_over_ranks
from graftflow.core.errors import StageError

log = logging.getLogger("graft.train")


@dataclass
class LoopPosition:
    """Where a phase is: epochs finished, batches finished in the current epoch, and its loss so far."""

    epoch: int = 0
    batch: int = 0
    loss_sum: float | torch.Tensor = 0.0


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    stopped_early: bool = False
    micro_batch: int | None = None  # set once CUDA ran out of memory: gradients are accumulated
    oom_backoffs: list[dict] = field(default_factory=list)


def _lrs(optimizer: torch.optim.Optimizer) -> str:
    seen = dict.fromkeys(f"{g.get('layer_group', '?')}={g['lr']:.3g}" for g in optimizer.param_groups)
    return ", ".join(seen)


def train_epochs(
    model: nn.Module,
    step_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler,
    policy: DevicePolicy,
    epochs: int,
    *,
    history: History,
    phase: str,
    batch_transform: Callable | None = None,
    validate: Callable[[], dict[str, float]] | None = None,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
    before_epoch: Callable[[int], dict[str, Any] | None] | None = None,
    after_step: Callable[[], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    position: LoopPosition | None = None,
    reseed: Callable[[int], None] | None = None,
    restore_rng: Callable[[], None] | None = None,
    on_position: Callable[[LoopPosition, bool], None] | None = None,
) -> History:
    """Train for `epochs`; the hooks are where strategies (freezing, EMA, early stopping) plug in.

    `before_epoch(i)` runs after `model.train()` and may return extra fields for
    the epoch's record; `after_step()` runs after every optimizer step;
    `should_stop()` is asked after each epoch's bookkeeping.

    Resuming: `position` says where a checkpoint left this phase; `reseed(epoch)`
    makes each epoch's shuffle a function of the epoch alone, the finished
    batches of a half-done epoch are drawn again and skipped, and then
    `restore_rng()` puts every RNG back where the checkpoint saw it, so the run
    continues exactly as if it had never stopped. `on_position(pos, epoch_end)`
    is called after every step and after every epoch's bookkeeping.
    """
    scaler = policy.make_scaler()
    sampler = getattr(loader, "sampler", None)
    pos = position or LoopPosition()
    for index in range(pos.epoch, epochs):
        if hasattr(sampler, "set_epoch"):  # a distributed shard: a new permutation every epoch
            sampler.set_epoch(len(history.epochs))
        if reseed is not None:
            reseed(len(history.epochs))
        model.train()
        extra = (before_epoch(index) or {}) if before_epoch is not None else {}
        start = time.perf_counter()
        skip = pos.batch
        loss_sum = torch.full((), float(pos.loss_sum), device=policy.torch_device)
        n_batches = skip
        for images, labels in loader:
            if skip:
                skip -= 1
                if skip == 0 and restore_rng is not None:
                    restore_rng()
                continue
            images, labels = policy.to_device(images), policy.to_device(labels)
            if batch_transform is not None:
                images, labels = batch_transform(images, labels)
            loss = _forward_backward(step_fn, images, labels, optimizer, policy, scaler, history)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if after_step is not None:
                after_step()
            loss_sum += loss.detach().float()
            n_batches += 1
            history.steps += 1
            if history.steps % 50 == 0:
                check_finite(loss_sum, history.steps, optimizer)
            if on_position is not None:
                on_position(LoopPosition(index, n_batches, loss_sum), False)  # a tensor: no sync unless saved
        if n_batches == 0:
            raise StageError(f"{phase}: the training data gave no batch (fewer images than batch_size?)")
        check_finite(loss_sum, history.steps, optimizer)
        loss_sum = mean_over_ranks(loss_sum)
        seconds = time.perf_counter() - start
        history.seconds += seconds
        metrics = {"train_loss": float(loss_sum) / n_batches}
        if validate is not None:
            metrics.update(validate())
        epoch = len(history.epochs) + 1
        record = {"epoch": epoch, "phase": phase, "seconds": round(seconds, 3), **extra, **metrics}
        history.epochs.append(record)
        log.info("%s epoch %d: %s (%.1fs)", phase, epoch,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()), seconds)
        if hasattr(scheduler, "epoch_end"):
            scheduler.epoch_end(metrics)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
        pos = LoopPosition()
        stop = should_stop is not None and should_stop()
        if stop:
            history.stopped_early = True
            log.info("%s: early stop after epoch %d", phase, epoch)
        if on_position is not None:
            on_position(LoopPosition(index + 1, 0, 0.0), True)
        if stop:
            break
    return history


def _forward_backward(step_fn, images, labels, optimizer, policy: DevicePolicy, scaler, history: History) -> torch.Tensor:
    """Gradients of the batch's mean loss, in micro-batches once memory has run out.

    CUDA out-of-memory halves the micro-batch and retries the same batch; the
    micro-batch losses are weighted by their share of the batch, so the
    accumulated gradient is the full batch's and the effective batch size and
    learning rate are unchanged. The smaller micro-batch is kept from then on.
    """
    while True:
        optimizer.zero_grad(set_to_none=True)
        size = len(images)
        micro = min(history.micro_batch or size, size)
        try:
            total = torch.zeros((), device=images.device)
            for start in range(0, size, micro):
                x, y = images[start:start + micro], labels[start:start + micro]
                with policy.autocast():
                    loss = step_fn(x, y) * (len(x) / size)
                scaler.scale(loss).backward()
                total += loss.detach().float()
            return total
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            if policy.device_type == "cuda":
                torch.cuda.empty_cache()
            if micro <= 1:
                raise StageError(f"out of memory at step {history.steps + 1} even with a micro-batch of 1; "
                                 "use a smaller model, image_size or precision bf16/fp16") from None
            history.micro_batch = micro // 2
            history.oom_backoffs.append({"step": history.steps + 1, "batch": size, "micro_batch": history.micro_batch})
            log.warning("out of memory at step %d: micro-batch %d → %d, accumulating %d micro-batches per step",
                        history.steps + 1, micro, history.micro_batch, -(-size // history.micro_batch))


def check_finite(loss_sum: torch.Tensor, step: int, optimizer: torch.optim.Optimizer) -> None:
    value = float(loss_sum)
    if not math.isfinite(value):
        raise StageError(f"non-finite loss by step {step} (learning rates: {_lrs(optimizer)}); lower the LR "
                         "(the last complete checkpoint is kept)")


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


def accuracy_and_loss(model: nn.Module, loader: DataLoader, policy: DevicePolicy) -> dict[str, float]:
    logits, labels = predict(model, loader, policy)
    if len(labels) == 0:
        return {}
    return {
        "val_loss": float(nn.functional.cross_entropy(logits, labels)),
        "val_accuracy": float((logits.argmax(1) == labels).float().mean()),
    }


def epoch_reseeder(loader: DataLoader, seed: int) -> Callable[[int], None]:
    """Each epoch's shuffle depends on (seed, epoch) alone, so a resumed run draws the same batches."""
    generator = loader.generator

    def reseed(epoch: int) -> None:
        if generator is not None:
            generator.manual_seed(seed * 1_000_003 + epoch)
    return reseed
