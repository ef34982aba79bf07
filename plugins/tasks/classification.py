"""The classification task: one class per image, a `num_classes`-way head, softmax predictions.

It is the default (`task: classification`) and what graftflow always did: the
family builds the classifier, cross-entropy trains it, `val_accuracy` may be
monitored, and the evaluate stage writes the confusion matrix, top losses and
predictions.csv. Every part is the core's own classifier code, named here and
imported when first used (a registration hook must stay cheap).
"""

from __future__ import annotations

from graftflow.core import Monitor, Params, TaskSpec, hookimpl


class ClassificationParams(Params):
    """Classification takes no parameters."""


def dataset(*args, **kwargs):
    from graftflow.core import ArrowImageDataset

    return ArrowImageDataset(*args, **kwargs)


def build_model(family, meta, params, **task_params):
    from graftflow.core import family_classifier

    return family_classifier(family, meta, params, **task_params)


def layer_groups(family, model):
    return family.layer_groups(model)


def validate(model, loader, loss, policy, **_):
    from graftflow.core import loss_and_accuracy

    return loss_and_accuracy(model, loader, loss, policy)


def evaluate(ctx):
    from graftflow.core import evaluate_classification

    return evaluate_classification(ctx)


@hookimpl
def graft_tasks():
    return [
        TaskSpec(
            name="classification",
            store_targets=frozenset({"single"}),
            loss_kind="classification",
            default_loss="cross-entropy",
            dataset=dataset,
            build_model=build_model,
            layer_groups=layer_groups,
            validate=validate,
            evaluate=evaluate,
            monitors=(Monitor("val_accuracy", "max"),),
            params_model=ClassificationParams,
            description="one class per image (the default): a softmax head over the classes",
        )
    ]
