"""Unsupervised domain adaptation: labelled source images, unlabelled target images (`finetune.method.target`).

Each training step forwards the source batch and a target batch together; the
classifier's loss is computed on the source part only, and a domain term pulls the
two domains' features together:

- `mmd` — DAN (Long et al. 2015): multi-kernel MMD² between source and target
  features (the registered `mmd` loss), its weight ramped 0 → `weight` over training;
- `dann` — DANN (Ganin et al. 2016): a domain discriminator on the features behind a
  gradient reversal layer whose factor follows λ_p = 2/(1 + exp(−10·p)) − 1;
- `cdan` — CDAN (Long et al. 2018): the discriminator sees the multilinear map of
  features and (detached) class probabilities, f ⊗ g, so it aligns class-conditional
  distributions; `entropy: true` is CDAN+E (confident examples weigh more); above
  `max_map` dimensions the map is randomised (the paper's random multilinear map).

The target's labels are never read: the stage hands these methods images only.
Per epoch they add the domain term's mean (`domain_loss`) and, for the adversarial
ones, the discriminator's accuracy (`domain_accuracy`) to the metrics.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from graftflow.core import (
    FinetuneMethod,
    MethodContext,
    MethodSpec,
    Monitor,
    Params,
    SourceConfig,
    grad_reverse,
    hookimpl,
    ramp,
)


class AdaptationParams(Params):
    target: SourceConfig = Field(
        description="The unlabelled target domain: a data source block, e.g. {kind: folder, path: ...}."
    )
    weight: float = Field(1.0, ge=0, description="Weight of the domain term at the end of the ramp.")
    gamma: float = Field(
        10.0, gt=0, description="Steepness of the ramp 2/(1+exp(-gamma·p))-1 over training progress p."
    )


class MMDParams(AdaptationParams):
    kernel_scales: list[float] = Field(
        [0.25, 0.5, 1.0, 2.0, 4.0], description="Multipliers of the median kernel width."
    )


class AdversarialParams(AdaptationParams):
    hidden: int = Field(256, gt=0, description="Width of the domain discriminator's two hidden layers.")
    dropout: float = Field(0.5, ge=0, lt=1, description="Dropout in the discriminator.")


class CDANParams(AdversarialParams):
    entropy: bool = Field(False, description="CDAN+E: weight examples by 1 + exp(-entropy of the prediction).")
    max_map: int = Field(4096, gt=0, description="Above this many features × classes, use a random multilinear map.")
    map_dim: int = Field(1024, gt=0, description="Output size of the random multilinear map.")


def discriminator(features: int, hidden: int, dropout: float) -> nn.Module:
    return nn.Sequential(
        nn.Linear(features, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, 1),
    )


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

    def __init__(self, hidden: int = 256, dropout: float = 0.5, **params):
        super().__init__(**params)
        self.hidden, self.dropout = hidden, dropout

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
        self.discriminator = discriminator(ctx.feature_dim, self.hidden, self.dropout).to(ctx.device)

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
        self.discriminator = discriminator(dim, self.hidden, self.dropout).to(ctx.device)

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


# The mean prediction entropy on the unlabelled target domain (TargetEntropy): lower is a more confident model.
TARGET_MONITORS = (Monitor("target_entropy", "min"),)


@hookimpl
def graft_finetune_methods():
    return [
        MethodSpec(
            name="mmd",
            build=lambda **p: MMDMethod(**p),
            params_model=MMDParams,
            monitors=TARGET_MONITORS,
            description="DAN: multi-kernel MMD between source and target features, weight ramped",
        ),
        MethodSpec(
            name="dann",
            build=lambda **p: DANN(**p),
            params_model=AdversarialParams,
            monitors=TARGET_MONITORS,
            description="DANN: domain discriminator behind a gradient reversal layer (Ganin et al. 2016)",
        ),
        MethodSpec(
            name="cdan",
            build=lambda **p: CDAN(**p),
            params_model=CDANParams,
            monitors=TARGET_MONITORS,
            description="CDAN(+E): discriminator on features ⊗ class probabilities (Long et al. 2018)",
        ),
    ]
