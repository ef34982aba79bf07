"""The domain-adaptation methods' torch code (`mmd`, `dann`, `cdan`): imported when one is built.

Registered, described and checked by `graftflow.plugins.methods.adaptation`, which needs no torch.
"""

from __future__ import annotations

import torch
from torch import nn

from graftflow.core import FinetuneMethod, MethodContext, grad_reverse, ramp


def discriminator(features: int, hidden: int, dropout: float, batch_norm: bool = False) -> nn.Module:
    """Two hidden layers, then a domain logit; without `batch_norm` its layers keep the indices (0, 3, 6)
    that checkpoints written before the option name."""

    def block(width_in: int) -> list[nn.Module]:
        norm = [nn.BatchNorm1d(hidden)] if batch_norm else []
        return [nn.Linear(width_in, hidden), *norm, nn.ReLU(), nn.Dropout(dropout)]

    return nn.Sequential(*block(features), *block(hidden), nn.Linear(hidden, 1))


class DomainAdaptation(FinetuneMethod):
    """The shared step: source and target through the model at once, the task loss on the source half."""

    needs_target = needs_features = True

    def __init__(self, target: dict, weight: float = 1.0, gamma: float = 10.0):
        super().__init__()
        self.weight, self.gamma = weight, gamma
        self._sums: torch.Tensor | None = None  # this epoch's domain loss, correct, seen: metrics, not state

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        self.split_forward, self.target = ctx.split_forward, ctx.target

    def loss(self, model, criterion, images, labels):
        target = self.target.batch(self.steps_done)[: len(images)]
        features, logits = self.split_forward(model, torch.cat([images, target]))
        n = len(images)
        task = criterion(logits[:n], labels, inputs=images)
        domain = self.domain_loss(features[:n], features[n:], logits[:n], logits[n:])
        return task + self.weight * domain

    def domain_loss(self, source, target, source_logits, target_logits) -> torch.Tensor:
        raise NotImplementedError

    def on_epoch_start(self, loop) -> None:
        self._sums = None

    def on_validate(self, loop) -> None:
        if self._sums is None:
            return
        total, correct, seen = self._sums.tolist()
        if loop.batch:
            loop.metrics["domain_loss"] = total / loop.batch
        if seen:
            loop.metrics["domain_accuracy"] = correct / seen

    def _count(self, value: torch.Tensor, logits: torch.Tensor | None = None, domains: torch.Tensor | None = None):
        with torch.no_grad():
            if self._sums is None:
                self._sums = torch.zeros(3, device=value.device)
            self._sums[0] += value.detach().float()
            if logits is not None:
                self._sums[1] += ((logits.squeeze(1) > 0).float() == domains).sum()
                self._sums[2] += len(domains)


class MMDMethod(DomainAdaptation):
    def __init__(self, kernel_scales: list[float] = (0.25, 0.5, 1.0, 2.0, 4.0), **params):
        super().__init__(**params)
        self.kernel_scales = list(kernel_scales)

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        self.mmd = ctx.make_loss({"name": "mmd", "scales": self.kernel_scales}, "finetune.method")

    def domain_loss(self, source, target, source_logits, target_logits):
        value = self.mmd(source, target)
        self._count(value)
        return ramp(self.progress, self.gamma) * value


class Adversarial(DomainAdaptation):
    """A discriminator behind the gradient reversal layer, trained to tell the domains apart."""

    def __init__(self, hidden: int = 256, dropout: float = 0.5, batch_norm: bool = False, **params):
        super().__init__(**params)
        self.hidden, self.dropout, self.batch_norm = hidden, dropout, batch_norm

    def discriminate(self, inputs: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        n = len(inputs) // 2
        domains = torch.cat([torch.zeros(n), torch.ones(len(inputs) - n)]).to(inputs.device)
        logits = self.discriminator(grad_reverse(inputs, ramp(self.progress, self.gamma)))
        value = nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), domains, weight=weights)
        self._count(value, logits, domains)
        return value


class DANN(Adversarial):
    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        self.discriminator = discriminator(ctx.feature_dim, self.hidden, self.dropout, self.batch_norm).to(ctx.device)

    def domain_loss(self, source, target, source_logits, target_logits):
        return self.discriminate(torch.cat([source, target]))


class CDAN(Adversarial):
    def __init__(self, entropy: bool = False, max_map: int = 4096, map_dim: int = 1024, **params):
        super().__init__(**params)
        self.entropy, self.max_map, self.map_dim = entropy, max_map, map_dim

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        outer = ctx.feature_dim * ctx.num_classes
        self.randomized = outer > self.max_map
        if self.randomized:  # fixed random projections (a seeded draw), part of the checkpointed state
            generator = torch.Generator().manual_seed(0)
            self.register_buffer(
                "map_f", torch.randn(ctx.feature_dim, self.map_dim, generator=generator).to(ctx.device)
            )
            self.register_buffer(
                "map_g", torch.randn(ctx.num_classes, self.map_dim, generator=generator).to(ctx.device)
            )
        dim = self.map_dim if self.randomized else outer
        self.discriminator = discriminator(dim, self.hidden, self.dropout, self.batch_norm).to(ctx.device)

    def multilinear(self, features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        if self.randomized:
            return (features @ self.map_f) * (probs @ self.map_g) / self.map_dim**0.5
        return torch.bmm(probs.unsqueeze(2), features.unsqueeze(1)).flatten(1)

    def domain_loss(self, source, target, source_logits, target_logits):
        features = torch.cat([source, target])
        probs = torch.cat([source_logits, target_logits]).softmax(1).detach()
        weights = None
        if self.entropy:  # CDAN+E: 1 + exp(-H(g)), normalised to mean 1 per domain
            h = -(probs * probs.clamp_min(1e-8).log()).sum(1)
            w = 1 + torch.exp(-h)
            n = len(source)
            weights = torch.cat([w[:n] / w[:n].mean(), w[n:] / w[n:].mean()]).detach()
        return self.discriminate(self.multilinear(features, probs), weights)
