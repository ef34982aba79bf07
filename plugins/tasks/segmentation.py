"""The segmentation task: a mask per class for every image (Severstal's steel defects).

Trains on mask stores (`data.source.layout.target: mask`: run-length-encoded
masks in a label table). The model is an smp U-Net or FPN over the family's timm
encoder (`plugins/tasks/seg_model.py`), the default loss BCE + Dice, validation
reports `val_dice` (Kaggle's mean Dice), evaluate scores Dice against the
empty-mask baseline (`seg_evaluate.py`), and `graft predict --format kaggle-rle`
writes a submission (`seg_predict.py`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from graftflow.core import Monitor, Params, TaskSpec, hookimpl


class SegmentationParams(Params):
    decoder: Literal["unet", "fpn"] = Field("unet", description="smp decoder over the timm encoder: unet or fpn.")
    encoder_depth: int = Field(
        5, ge=3, le=5, description="Encoder stages the decoder reads (image sides divide 2^depth)."
    )
    decoder_channels: list[int] | None = Field(
        None,
        description="unet: channels of each decoder block (as many as encoder_depth; smp's default 256..16); "
        "fpn: [pyramid, segmentation] channels.",
    )
    threshold: float = Field(0.5, gt=0, lt=1, description="Probability above which a pixel is in a class's mask.")
    min_area: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="A predicted mask covering less than this fraction of the image is dropped (empty): "
        "Kaggle's Dice gives an empty mask of a clean image 1 and any speck 0.",
    )


def dataset(*args, **kwargs):
    from graftflow.core import MaskDataset

    return MaskDataset(*args, **kwargs)


def build_model(family, meta, params, **task):
    from graftflow.plugins.tasks.seg_model import build

    return build(family, meta, params, **task)


def layer_groups(family, model):
    from graftflow.plugins.tasks.seg_model import layer_groups as groups

    return groups(family, model)


def validate(model, loader, loss, policy, threshold: float = 0.5, min_area: float = 0.0, **_):
    from graftflow.plugins.tasks.seg_metrics import validate as scores

    return scores(model, loader, loss, policy, threshold, min_area)


def evaluate(ctx):
    from graftflow.plugins.tasks.seg_evaluate import evaluate as run

    params = SegmentationParams.model_validate(ctx.config.task.params)
    return run(ctx, params.threshold, params.min_area)


def predict(outputs, meta, names, sizes, threshold: float = 0.5, min_area: float = 0.0, **_):
    from graftflow.plugins.tasks.seg_predict import predict as rows

    return rows(outputs, meta, names, sizes, threshold, min_area)


def write(rows, dest, fmt):
    from graftflow.plugins.tasks.seg_predict import write as out

    out(rows, dest, fmt)


def gallery(rows, images, path):
    from graftflow.plugins.tasks.seg_predict import gallery as draw

    return draw(rows, images, path)


@hookimpl
def graft_tasks():
    return [
        TaskSpec(
            name="segmentation",
            store_targets=frozenset({"mask"}),
            loss_kind="segmentation",
            default_loss="bce-dice",
            dataset=dataset,
            build_model=build_model,
            layer_groups=layer_groups,
            validate=validate,
            evaluate=evaluate,
            predict=predict,
            write=write,
            gallery=gallery,
            formats=("kaggle-rle", "masks"),
            monitors=(Monitor("val_dice", "max"),),
            backbone_key=lambda key: "encoder.model." + key,
            params_model=SegmentationParams,
            description="a mask per class (smp U-Net / FPN over a timm encoder); Dice as Kaggle scores it",
        )
    ]
