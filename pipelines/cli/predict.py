"""`graft predict MODEL INPUT...`: classes and probabilities for new images, with the model's own preprocessing.

No Prefect and no config file: the model folder says everything (architecture,
classes, size, channels, normalisation, eval transforms). The same code serves the
`predict` flow and `load_predictor` in a notebook (`graftflow.core.inference`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    predict = sub.add_parser(
        "predict",
        help="predict the classes of new images with a trained model",
        description="MODEL: a run id (under --artifact-root), latest, a run folder, a model folder "
        "(finetune/model), an export folder, or a model-store URI (models:/NAME@ALIAS with "
        "--plugin graftflow.plugins.trackers.mlflow). INPUT: image files, folders, globs, fsspec URLs, "
        "zip/tar archives.",
    )
    predict.add_argument("model", metavar="MODEL")
    predict.add_argument("inputs", nargs="*", metavar="INPUT")
    predict.add_argument("--split", choices=("train", "val", "test"), help="also predict this split of the run's store")
    predict.add_argument(
        "--out", help="write FILE.csv or FILE.parquet (+ FILE.json: what made it); default: CSV on stdout"
    )
    predict.add_argument("--top-k", type=int, default=3, metavar="K", help="classes kept per image (default 3)")
    predict.add_argument("--tta", action="store_true", help="average softmax over test-time augmentation views")
    predict.add_argument(
        "--tta-views", metavar="V,V,...", help="TTA views (default original,hflip,zoom:0.9,hflip+zoom:0.9)"
    )
    predict.add_argument(
        "--format",
        metavar="FORMAT",
        help="an output of the model's task: segmentation writes kaggle-rle (ImageId,EncodedPixels,ClassId; the "
        "default) or masks (a folder of PNGs at --out)",
    )
    predict.add_argument("--engine", choices=("eager", "onnx", "torchscript"), default="eager")
    predict.add_argument("--batch-size", type=int, default=64, metavar="N")
    predict.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    predict.add_argument("--artifact-root", default="./.graft/runs", help="where run ids are looked up")
    predict.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="also load this plugin module or .py file (a model store for MODEL, a family the model needs)",
    )
    predict.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from graftflow.core.config import DEFAULT_TTA_VIEWS, parse_tta_views
    from graftflow.core.errors import ConfigError
    from graftflow.core.inference.outputs import csv_text, output_format, record, write_predictions
    from graftflow.core.inference.predictor import load_predictor
    from graftflow.core.inference.sources import prediction_inputs

    if args.top_k < 1 or args.batch_size < 1:
        raise ConfigError(f"--{'top-k' if args.top_k < 1 else 'batch-size'}: must be at least 1")
    if args.out and not args.format:  # a task's own --format checks its --out itself
        output_format(args.out)
    try:
        views = parse_tta_views(args.tta_views) if args.tta_views else list(DEFAULT_TTA_VIEWS)
    except ValueError as exc:
        raise ConfigError(f"--tta-views: {exc}") from None
    predictor = load_predictor(
        args.model,
        engine=args.engine,
        device=args.device,
        tta=args.tta or bool(args.tta_views),
        tta_views=views,
        batch_size=args.batch_size,
        artifact_root=args.artifact_root,
        plugins=args.plugin,
    )
    if predictor.task is not None and predictor.task.predict is not None:
        return _task_outputs(predictor, args)
    if args.format:
        raise ConfigError(f"--format: task '{predictor.task.name}' writes csv or parquet by --out's suffix")
    run_url = predictor.location.run_url if predictor.location else None
    with prediction_inputs(args.inputs, args.split, run_url, predictor.class_names) as images:
        with ProgressBar(len(images)) as progress:
            predictions = predictor.predict_inputs(images, progress)
    described = predictor.describe()
    if args.out:
        write_predictions(predictions, args.out, args.top_k, described)
    else:
        sys.stdout.write(csv_text(predictions.rows(args.top_k)))
    meta = record(predictions, described, args.top_k)
    tta = f" + TTA ({', '.join(predictor.tta_views)})" if predictor.tta_views else ""
    print(
        f"predicted {meta['images']} image(s) with {predictor.engine_name}{tta} → {args.out or 'stdout'}",
        file=sys.stderr,
    )
    if predictions.skipped:
        print(f"warning: {predictions.skipped_summary()}", file=sys.stderr)
    return 0


def _task_outputs(predictor, args: argparse.Namespace) -> int:
    """A task with outputs of its own (segmentation masks): `TaskSpec.predict`, written by `TaskSpec.write`."""
    from graftflow.core.errors import ConfigError
    from graftflow.core.inference.sources import prediction_inputs
    from graftflow.core.inference.task_outputs import check_format, task_rows, write_gallery

    fmt = check_format(predictor, args.format)
    if not args.out:
        raise ConfigError(f"--out: task '{predictor.task.name}' writes {fmt} to a file or folder; give --out")
    run_url = predictor.location.run_url if predictor.location else None
    with prediction_inputs(args.inputs, args.split, run_url, predictor.class_names) as images:
        with ProgressBar(len(images)) as progress:
            previews: list[bytes] = []
            rows, skipped = task_rows(predictor, images, progress, previews)
    predictor.task.write(rows, args.out, fmt)
    print(f"predicted {len(rows)} image(s) with {predictor.engine_name} → {args.out} ({fmt})", file=sys.stderr)
    if "://" not in args.out:  # the gallery beside a local --out: submission.csv → submission.gallery.png
        out = Path(args.out.rstrip("/"))
        drawn = write_gallery(predictor, rows, previews, out.with_name(out.name.split(".")[0] + ".gallery.png"))
        if drawn is not None:
            print(f"prediction gallery → {drawn}", file=sys.stderr)
    if skipped:
        print(f"warning: {len(skipped)} image(s) skipped; first: {skipped[0][0]}: {skipped[0][1]}", file=sys.stderr)
    return 0


class ProgressBar:
    """A rich progress bar on the terminal's stderr; nothing when stderr is not a terminal (scripts, CI)."""

    def __init__(self, total: int):
        self.total = total

    def __enter__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        console = Console(stderr=True)
        self.bar = Progress(
            "predicting",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.bar.__enter__()
        self.task = self.bar.add_task("predict", total=self.total)
        return lambda done, total: self.bar.update(self.task, completed=done)

    def __exit__(self, *exc):
        self.bar.__exit__(*exc)
        return False
