"""Predict: score new images with a trained model and write the predictions file (the `predict` flow).

The same code as `graft predict` and `load_predictor` (`graftflow.core.inference`).
`predict.model` names the model (a run id, `latest`, a run, model or export folder, or a
model-store URI such as `models:/NAME@champion` served by a plugin in `plugins:`);
unset, it is the fine-tuned model of the run this stage runs in. The stage writes
`predictions.csv` (or .parquet, after `predict.out`'s suffix) with its record
`predictions.csv.json`, copies both to `predict.out` when set, and shows the first rows and
the class counts as artifacts. Unreadable images are skipped and counted, never fatal.
"""

from __future__ import annotations

import logging

from graftflow.core.errors import StageError
from graftflow.core.inference.outputs import output_format, write_predictions
from graftflow.core.inference.predictor import load_predictor
from graftflow.core.inference.sources import prediction_inputs
from graftflow.core.stages.base import Artifact, StageContext, StageResult

log = logging.getLogger("graft.stage")
FIRST_ROWS = 20  # rows in the predictions artifact
GALLERY = "gallery.png"  # a task's prediction gallery (TaskSpec.gallery), beside predictions.csv


def run(ctx: StageContext) -> StageResult:
    cfg = ctx.config.predict
    model = cfg.model or _this_run(ctx)
    predictor = load_predictor(
        model,
        engine=cfg.engine,
        device=ctx.config.device,
        tta=cfg.tta,
        tta_views=cfg.tta_views,
        batch_size=cfg.batch_size,
        artifact_root=ctx.config.artifact_root,
        pipeline=ctx.config.name,
        field="predict.model",
        host=ctx.host,  # model stores (models:/NAME@alias) of the config's plugins
    )
    if predictor.task is not None and predictor.task.predict is not None:
        return _task_predictions(ctx, predictor)
    run_url = predictor.location.run_url if predictor.location else None
    with prediction_inputs(cfg.inputs, cfg.split, run_url, predictor.class_names, "predict.inputs") as images:
        predictions = predictor.predict_inputs(images)
    if predictions.skipped:
        log.warning("predict: %s", predictions.skipped_summary())
    name = "predictions" + (output_format(cfg.out, "predict.out") if cfg.out else ".csv")
    record = write_predictions(predictions, str(ctx.out / name), cfg.top_k, predictor.describe())
    if cfg.out:
        write_predictions(predictions, cfg.out, cfg.top_k, predictor.describe())
        record["out"] = cfg.out
    counts = [{"class": c, "images": n} for c, n in record["class_counts"].items()]
    return StageResult(
        outputs={"predictions": name, "record": name + ".json"},
        summary={"predict": record},
        artifacts=[
            Artifact(
                "table",
                "predictions",
                f"first {min(FIRST_ROWS, len(predictions))} of {len(predictions)} predictions ({predictor.engine_name}"
                f"{', TTA' if predictor.tta_views else ''}; {len(predictions.skipped)} skipped)",
                rows=predictions.rows(cfg.top_k)[:FIRST_ROWS] or [{"source": "-", "prediction": "-"}],
            ),
            Artifact("table", "predicted-classes", "images per predicted class", rows=counts),
        ],
    )


def _task_predictions(ctx: StageContext, predictor) -> StageResult:
    """A task with outputs of its own (masks, label sets): its rows in its first format (`TaskSpec.formats`,
    e.g. segmentation's kaggle-rle submission), written to predictions.csv and to `predict.out` when set."""
    from graftflow.core import storage
    from graftflow.core.inference.task_outputs import check_format, task_rows, write_gallery

    cfg = ctx.config.predict
    fmt = check_format(predictor, None, "predict")
    run_url = predictor.location.run_url if predictor.location else None
    with prediction_inputs(cfg.inputs, cfg.split, run_url, predictor.class_names, "predict.inputs") as images:
        previews: list[bytes] = []
        rows, skipped = task_rows(predictor, images, None, previews)
    if skipped:
        log.warning("predict: %d image(s) skipped; first: %s: %s", len(skipped), *skipped[0])
    predictor.task.write(rows, str(ctx.out / "predictions.csv"), fmt)
    record = {**predictor.describe(), "task": predictor.task.name, "format": fmt, "images": len(rows)}
    record["skipped"] = len(skipped)
    if cfg.out:
        predictor.task.write(rows, cfg.out, fmt)
        record["out"] = cfg.out
    storage.write_json(str(ctx.out / "predictions.csv.json"), record)
    outputs = {"predictions": "predictions.csv", "record": "predictions.csv.json"}
    artifacts = [
        Artifact(
            "table",
            "predictions",
            f"{len(rows)} images predicted ({predictor.task.name}, {fmt}; {len(skipped)} skipped)",
            rows=[_shown(r) for r in rows[:FIRST_ROWS]] or [{"source": "-"}],
        )
    ]
    if write_gallery(predictor, rows, previews, ctx.out / GALLERY) is not None:
        outputs["gallery"] = GALLERY
        shown = min(len(previews), len(rows))
        artifacts.append(Artifact("image", "prediction-gallery", f"the first {shown} predictions", path=GALLERY))
    return StageResult(outputs=outputs, summary={"predict": record}, artifacts=artifacts)


def _shown(row: dict) -> dict:
    """A task's row as a table row: its numbers and names, lists joined with |, arrays (masks) left out."""
    shown = {}
    for key, value in row.items():
        if isinstance(value, (str, int, float)):
            shown[key] = value
        elif isinstance(value, list):
            shown[key] = "|".join(map(str, value))
    return shown


def _this_run(ctx: StageContext) -> str:
    if not ctx.run.completed("finetune"):
        raise StageError(
            f"predict.model: not set, and run {ctx.run.run_id} has no fine-tuned model; set predict.model "
            f"(a run id, latest, a run/model/export folder) or continue a trained run (run_id)"
        )
    return ctx.run.url
