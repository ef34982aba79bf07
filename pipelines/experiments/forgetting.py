"""Experiment: learning new classes without forgetting the old ones (digits 0–4 → 5–9, one 10-way head).

    make experiment-lwf       # or: python -m graftflow.pipelines.experiments.forgetting [--seeds 0 1 2]

The demo config (`pipelines/configs/digits.yaml`) pretrains a classifier on digits 0–4, then
fine-tunes on digits 5–9 with `finetune.head: extend`: the pretrained 5-way head grows to 10 ways
(old rows kept, new rows appended), and only 5–9 images are used, as in class-incremental learning.
Arms, each through the real `transfer` flow, everything else equal:

- **fine-tune**: `finetune.method: standard` — plain fine-tuning of the extended head;
- **lwf**: learning without forgetting (Li & Hoiem 2016), the old logits distilled from the frozen
  starting model (T = 2);
- **lwf + replay 5**: the same with 5 exemplars of each old class mixed into the training data.

Reported on the held-out test images of all ten digits (argmax over the whole 10-way head): old-class
accuracy (0–4), new-class accuracy (5–9), all, and the forgetting — the pretrained model's old-class
accuracy minus the old-class accuracy after — mean ± sample std over seeds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from graftflow.core.config import load_config
from graftflow.core.runs import Run
from graftflow.pipelines.experiments.report import OUT, mean_std, write_report

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits.yaml"
ARMS = {
    "fine-tune": ["finetune.method=standard"],
    "lwf": ["finetune.method={name: lwf, temperature: 2.0}"],
    "lwf + replay 5": ["finetune.method={name: lwf, temperature: 2.0, replay: 5}"],
}
COLUMNS = ("accuracy_old", "accuracy_new", "accuracy_all", "forgetting")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--root", default=str(OUT / "forgetting"), help="artifact root of the runs")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides for every arm")
    args = parser.parse_args(argv)

    from graftflow.pipelines.cli.common import prefect_defaults

    prefect_defaults()
    from graftflow.pipelines.flows import transfer

    base = [f"artifact_root={args.root}", "name=forgetting", "finetune.head=extend", "export.formats=[safetensors]"]
    results: dict[str, dict[str, list[float]]] = {}
    started = time.perf_counter()
    for seed in args.seeds:
        seeded = [*base, f"seed={seed}", *args.set]
        pre = transfer(config=load_config(CONFIG, seeded), stages=["acquire", "pretrain"])
        for arm, overrides in ARMS.items():
            config = load_config(CONFIG, [*seeded, *overrides])
            result = transfer(config=config, stages=["finetune", "evaluate"], run_id=pre["run_id"], force=True)
            incremental = Run(config, result["run_id"]).summary()["metrics"]["incremental"]
            for column in COLUMNS:
                results.setdefault(arm, {}).setdefault(column, []).append(incremental[column])
            print(f"seed {seed} {arm:15s} " + "  ".join(f"{c} {incremental[c]:.4f}" for c in COLUMNS), flush=True)
    rows = ["| arm | old (0–4) | new (5–9) | all | forgetting |", "|---|---|---|---|---|"]
    for arm, columns in results.items():
        rows.append(f"| {arm} | " + " | ".join(mean_std(columns[c]) for c in COLUMNS) + " |")
    record = {"seeds": args.seeds, "overrides": args.set, "results": results}
    write_report("forgetting", "\n".join(rows), record, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
