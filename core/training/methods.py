"""Fine-tuning methods: what a method adds to the standard recipe, as one object the stage trains through.

A method is an `nn.Module` — its own trainable parts (a domain discriminator)
are parameters, optimised as the group "method" at the head's learning rate and
checkpointed with the model — and a training `Callback`, so it sees the loop's
events (weight ramps, per-epoch metrics). Every training step's loss is
`method.loss(model, criterion, images, labels)`, computed inside one module
(`TrainStep`), so under DDP the method's parameters are synchronised with the
model's. The standard method is this base class as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from graftflow.core.device import DevicePolicy
from graftflow.core.training.callbacks import Callback

if TYPE_CHECKING:
    from graftflow.core.training.loop import Loop

SplitForward = Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class MethodContext:
    """What `FinetuneMethod.setup` gets once the model is built and on its device.

    `split_forward(model, images)` → (features, logits): the pooled features the
    classifier reads, and its logits (for methods with `needs_features`).
    `old_classes`: with `finetune.head: extend`, the first `old_classes` outputs are the
    pretrained head's classes. `teacher`: a frozen copy of the model as fine-tuning
    starts (for `extends_head`). `device`: where the model trains (put new modules there).
    `total_steps`: optimizer steps of the whole stage, for
    schedules over training progress. `target`: the unlabelled target batches
    (`needs_target`). `make_loss(ref, field)` builds a registered loss.
    """

    model: nn.Module
    num_classes: int
    total_steps: int
    device: torch.device = torch.device("cpu")
    split_forward: SplitForward | None = None
    feature_dim: int | None = None
    old_classes: int = 0
    teacher: nn.Module | None = None
    target: TargetBatches | None = None
    make_loss: Callable[[Mapping[str, Any], str], nn.Module] | None = None


class FinetuneMethod(nn.Module, Callback):
    """The standard recipe: the stage's loss on the labelled batch. Subclass to add to it.

    Class attributes say what the method needs; `setup` receives it; `loss` is the
    training objective of one batch; Callback events (`on_validate` to add metrics,
    `on_epoch_start` to reset counters) see the loop. `progress` is the fraction of the
    stage's optimizer steps already taken, 0 → 1, resumed exactly with the run.
    """

    needs_target = False  # a second, unlabelled stream: finetune.method.target (its labels are never read)
    needs_features = False  # the model's pooled features (split_forward)
    extends_head = False  # needs finetune.head: extend (old classes kept, new ones appended)
    replay_per_class = 0  # exemplars of each old class mixed into the training data

    def __init__(self) -> None:
        super().__init__()
        self.steps_done, self.total_steps = 0, 1

    def setup(self, ctx: MethodContext) -> None:
        self.total_steps = max(ctx.total_steps, 1)

    @property
    def progress(self) -> float:
        return min(self.steps_done / self.total_steps, 1.0)

    def loss(self, model: nn.Module, criterion: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return criterion(model(images), labels, inputs=images)

    def on_fit_start(self, loop: Loop) -> None:
        self.steps_done = loop.history.steps  # a resumed phase continues the ramp where it was

    def on_step_end(self, loop: Loop) -> None:
        self.steps_done = loop.history.steps


def ramp(progress: float, gamma: float = 10.0) -> float:
    """Ganin et al. (2016)'s schedule, 2 / (1 + exp(−γ·p)) − 1: 0 at the start, → 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient is negated and multiplied by `scale` (DANN's gradient reversal layer)."""
    return _GradientReversal.apply(x, scale)


class TrainStep(nn.Module):
    """model + criterion + method: `forward(images, labels)` is one training loss, what DDP wraps."""

    def __init__(self, model: nn.Module, criterion: nn.Module, method: FinetuneMethod):
        super().__init__()
        self.model, self.criterion, self.method = model, criterion, method

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.method.loss(self.model, self.criterion, images, labels)


class TargetBatches(Callback):
    """Unlabelled target-domain images, one batch per training step, reproducible by (seed, epoch).

    The loader's dataset carries no labels worth the name (the stage gives it zeros),
    so nothing the target store says about classes can reach training. Each epoch the
    shuffle is reseeded like the source's, and a resumed epoch draws again the batches
    its finished steps used, so a resumed run sees the same target images. A step's
    micro-batches (after a CUDA out-of-memory) share its one target batch.
    """

    def __init__(self, loader: Iterable, policy: DevicePolicy, seed: int, batch_transform: Callable | None = None):
        self.loader, self.policy, self.seed, self.batch_transform = loader, policy, seed, batch_transform
        self._iterator: Any = None
        self._epoch = self._cycle = 0
        self._step, self._batch = -1, None

    def on_epoch_start(self, loop: Loop) -> None:
        self._epoch, self._cycle = len(loop.history.epochs), 0
        self._restart()
        for _ in range(loop.skip_batches):
            self._draw()

    def _restart(self) -> None:
        generator = getattr(self.loader, "generator", None)
        if generator is not None:
            generator.manual_seed((self.seed * 1_000_003 + self._epoch) * 1_009 + self._cycle)
        self._iterator = iter(self.loader)

    def _draw(self) -> torch.Tensor:
        try:
            images, _ = next(self._iterator)
        except StopIteration:  # the target set is smaller than the source's epoch: go round again
            self._cycle += 1
            self._restart()
            images, _ = next(self._iterator)
        return images

    def batch(self, step: int) -> torch.Tensor:
        """The target images of optimizer step `step` (drawn on its first call)."""
        if step != self._step:
            images = self.policy.to_device(self._draw())
            if self.batch_transform is not None:
                zeros = torch.zeros(len(images), dtype=torch.long, device=images.device)
                images, _ = self.batch_transform(images, zeros)
            self._step, self._batch = step, images
        return self._batch
