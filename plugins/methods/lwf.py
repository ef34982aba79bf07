"""Learning without forgetting (Li & Hoiem 2016): learn new classes, keep the old ones.

With `finetune.head: extend` the fine-tuned model's head is the pretrained head with
the new classes appended (the old rows start as they were). Each step adds to the
loss on the new data the distillation of the old classes' logits from a frozen copy
of the model fine-tuning started from: T² · KL(softmax(teacher/T) ‖ softmax(student/T))
over the old outputs, weighted by `alpha`. `replay: K` mixes K exemplars of each old
class (a fixed, seeded choice from the old classes' training images) into the
training data — rehearsal, as iCaRL-style methods do.
"""

from __future__ import annotations

from pydantic import Field

from graftflow.core import MethodSpec, Params, forward_to, hookimpl, lazy_module

_impl = lazy_module("graftflow.plugins.methods._lwf")  # the nn.Module, built from here: registering needs no torch
# `distillation`, `LwF`, as before
__getattr__ = forward_to("graftflow.plugins.methods._lwf", ("distillation", "LwF"))


class LwFParams(Params):
    temperature: float = Field(2.0, gt=0, description="Distillation temperature T (Li & Hoiem use 2).")
    alpha: float = Field(1.0, ge=0, description="Weight of the distillation term.")
    replay: int = Field(0, ge=0, description="Exemplars per old class mixed into the training data (0 = none).")


@hookimpl
def graft_finetune_methods():
    return [
        MethodSpec(
            name="lwf",
            build=lambda **p: _impl.LwF(**p),
            needs_target=False,
            needs_features=False,
            extends_head=True,
            params_model=LwFParams,
            description="learning without forgetting: distil the old classes from the starting model",
        )
    ]
