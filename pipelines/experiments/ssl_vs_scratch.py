"""Self-supervised pretraining vs training from scratch, with 10 labels per class.

    make experiment-ssl          # or: python -m graftflow.pipelines.experiments.ssl_vs_scratch [--seeds 0 1 2]

For each seed, two runs of the `transfer` flow on the same config
(`pipelines/configs/ssl_digits.yaml`, UCI digits at their native 8×8 pixels):

- **pretrained**: acquire → pretrain (SimCLR on every training image, labels unused) →
  finetune (10 labelled images per class) → evaluate (test split, plus a kNN probe of the
  frozen pretrained backbone);
- **scratch**: acquire → finetune → evaluate, with `pretrain.enabled=false` and nothing else
  changed: the same 100 labelled images (the subsample depends on the seed only), the same
  epochs, learning rates and augmentations.

The split (`data.split.seed`) is the same for every run; test images are never used for
pretraining. The seed changes the weight initialisation, shuffling, views and which 10 images
per class carry labels. Prints a markdown table (test accuracy, mean ± sample std over seeds)
and writes `results.json` beside the runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from graftflow.core import storage
from graftflow.core.config import load_config
from graftflow.core.errors import GraftError
from graftflow.pipelines.experiments.report import mean_std

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ssl_digits.yaml"
ARMS = {
    "pretrained": (["acquire", "pretrain", "finetune", "evaluate"], []),
    "scratch": (["acquire", "finetune", "evaluate"], ["pretrain.enabled=false", "evaluate.probe=none"]),
}


def run_arm(config_path: Path, arm: str, seed: int, overrides: list[str]) -> dict[str, Any]:
    from graftflow.pipelines.flows import transfer

    stages, extra = ARMS[arm]
    config = load_config(config_path, [f"seed={seed}", f"name=ssl-vs-scratch-{arm}", *overrides, *extra])
    start = time.perf_counter()
    result = transfer(config=config, stages=stages)
    summary = storage.read_json(result["summary"])
    metrics = summary["metrics"]
    return {
        "arm": arm,
        "seed": seed,
        "run": result["url"],
        "seconds": round(time.perf_counter() - start, 1),
        "test_accuracy": metrics["test"]["accuracy"],
        "test_macro_f1": metrics["test"]["macro_f1"],
        "test_images": metrics["test"]["images"],
        "labelled_images": summary["finetune"]["images"],
        "probe_accuracy": (metrics.get("probe") or {}).get("accuracy"),
        "pretrain_images": (summary.get("pretrain") or {}).get("images"),
    }


def table(results: list[dict[str, Any]], seeds: list[int]) -> str:
    rows = [
        "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    lines = [
        ("pretrained (SimCLR) → fine-tune", "pretrained", "test_accuracy"),
        ("scratch → fine-tune", "scratch", "test_accuracy"),
        ("kNN probe of the SimCLR backbone", "pretrained", "probe_accuracy"),
    ]
    for label, arm, key in lines:
        values = [next(r[key] for r in results if r["arm"] == arm and r["seed"] == s) for s in seeds]
        if any(v is None for v in values):
            continue
        rows.append(f"| {label} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {mean_std(values)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssl_vs_scratch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="pipeline config (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="config override for both arms, as in `graft run --set`",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on 2 cores shared with the Prefect server and other "
        "work, one thread is >2x faster than oversubscribed two; 0 = torch's default)",
    )
    args = parser.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    logging.getLogger("graft").setLevel(logging.WARNING)
    start = time.perf_counter()
    results = []
    try:
        for seed in args.seeds:
            for arm in ARMS:
                results.append(run_arm(args.config, arm, seed, args.overrides))
                r = results[-1]
                print(
                    f"seed {seed} {arm}: test accuracy {r['test_accuracy']:.4f} ({r['seconds']:.0f}s)",
                    file=sys.stderr,
                    flush=True,
                )
    except GraftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    wall = time.perf_counter() - start
    out = table(results, args.seeds)
    first = load_config(args.config, args.overrides)
    path = storage.join(first.artifact_root, "ssl-vs-scratch-results.json")
    storage.write_json(
        path,
        {
            "config": str(args.config),
            "overrides": args.overrides,
            "seeds": args.seeds,
            "wall_seconds": round(wall, 1),
            "runs": results,
        },
    )
    print(out)
    print(
        f"\n{len(results)} runs in {wall / 60:.1f} min; test split: {results[0]['test_images']} images, "
        f"{results[0]['labelled_images']} labelled training images; details: {path}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
