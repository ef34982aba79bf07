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

from pydantic import Field

from graftflow.core import MethodSpec, Monitor, Params, SourceConfig, forward_to, hookimpl, lazy_module

# The methods themselves (nn.Modules) are built from here; registering and checking them imports no torch.
_impl = lazy_module("graftflow.plugins.methods._adaptation")
__getattr__ = forward_to(
    "graftflow.plugins.methods._adaptation",
    ("discriminator", "DomainAdaptation", "MMDMethod", "Adversarial", "DANN", "CDAN"),
)  # `discriminator`, `DANN`, ... as before


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
    batch_norm: bool = Field(
        False, description="BatchNorm after each hidden layer of the discriminator (Transfer-Learning-Library's)."
    )


class CDANParams(AdversarialParams):
    entropy: bool = Field(False, description="CDAN+E: weight examples by 1 + exp(-entropy of the prediction).")
    max_map: int = Field(4096, gt=0, description="Above this many features × classes, use a random multilinear map.")
    map_dim: int = Field(1024, gt=0, description="Output size of the random multilinear map.")


# The mean prediction entropy on the unlabelled target domain (TargetEntropy): lower is a more confident model.
TARGET_MONITORS = (Monitor("target_entropy", "min"),)


@hookimpl
def graft_finetune_methods():
    return [
        MethodSpec(
            name="mmd",
            build=lambda **p: _impl.MMDMethod(**p),
            needs_target=True,
            needs_features=True,
            extends_head=False,
            params_model=MMDParams,
            monitors=TARGET_MONITORS,
            description="DAN: multi-kernel MMD between source and target features, weight ramped",
        ),
        MethodSpec(
            name="dann",
            build=lambda **p: _impl.DANN(**p),
            needs_target=True,
            needs_features=True,
            extends_head=False,
            params_model=AdversarialParams,
            monitors=TARGET_MONITORS,
            description="DANN: domain discriminator behind a gradient reversal layer (Ganin et al. 2016)",
        ),
        MethodSpec(
            name="cdan",
            build=lambda **p: _impl.CDAN(**p),
            needs_target=True,
            needs_features=True,
            extends_head=False,
            params_model=CDANParams,
            monitors=TARGET_MONITORS,
            description="CDAN(+E): discriminator on features ⊗ class probabilities (Long et al. 2018)",
        ),
    ]
