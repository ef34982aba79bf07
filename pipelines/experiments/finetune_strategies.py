"""Experiment: how to fine-tune the demo transfer (digits 0–4 → 5–9).

For each seed, one supervised pretraining on digits 0–4, then four ways to
train the 5–9 task for the same number of epochs, each evaluated on the
held-out 5–9 test images:
  discriminative  pretrained body; head-only epoch, then all groups at lr [lo, hi]
  uniform         pretrained body; head-only epoch, then all groups at one lr (hi)
  head-only       pretrained body frozen for every epoch; only the head trains (lr hi)
  scratch         no pretraining; all groups at one lr (hi)
Everything runs through the real Prefect flows. `--labels 10 50` repeats the four arms with only
that many labelled 5–9 training images per class (`finetune.labels_per_class`, a fixed subsample
by seed), where transfer matters most; `all` is the whole training split. A smaller budget trains
for proportionally more epochs (10 per class: ×13), so every arm takes the optimizer steps the whole
split takes.

    python -m graftflow.pipelines.experiments.finetune_strategies [--seeds 0 1 2] [--labels all 10 50]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from graftflow.core.config import load_config
from graftflow.core.runs import Run
from graftflow.pipelines.experiments.report import OUT, mean_std, write_report

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "digits.yaml"


def variants(lo: float, hi: float, epochs: int, backbone: str, scale: int = 1) -> dict[str, list[str]]:
    """The four arms; `scale` multiplies every epoch count (a smaller label budget, the same optimizer steps)."""
    head, epochs = scale, scale * epochs
    total = head + epochs
    return {
        "discriminative": [
            f"model.weights={backbone}",
            f"finetune.lr=[{lo}, {hi}]",
            f"finetune.freeze_epochs={head}",
            f"finetune.epochs={epochs}",
        ],
        "uniform": [
            f"model.weights={backbone}",
            f"finetune.lr={hi}",
            f"finetune.freeze_epochs={head}",
            f"finetune.epochs={epochs}",
        ],
        "head-only": [
            f"model.weights={backbone}",
            f"finetune.lr={hi}",
            f"finetune.freeze_epochs={total}",
            "finetune.epochs=0",
        ],
        "scratch": [f"finetune.lr={hi}", "finetune.freeze_epochs=0", f"finetune.epochs={total}"],
    }


def epoch_scale(summary: dict, budget: str) -> int:
    """How many times the epochs of the whole training split a budget of `budget` images per class needs
    for the same number of optimizer steps (the full split's images per class over the budget)."""
    if budget == "all":
        return 1
    data = summary["data"]
    per_class = data["split_counts"]["train"] / data["classes"]
    return max(1, round(per_class / int(budget)))


def pre_summary(pre: dict, overrides: list[str]) -> dict:
    return Run(load_config(CONFIG, overrides), pre["run_id"]).summary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labels", nargs="+", default=["all"], help="label budgets per class: all, or numbers")
    parser.add_argument("--root", default=str(OUT / "finetune-strategies"), help="artifact root of the runs")
    args = parser.parse_args(argv)

    from graftflow.pipelines.cli.common import prefect_defaults

    prefect_defaults()
    from graftflow.pipelines.flows import transfer

    base = [f"artifact_root={args.root}", "name=strategies"]
    demo = load_config(CONFIG, base)
    lo, hi = demo.finetune.lr
    epochs = demo.finetune.epochs
    scores: dict[str, dict[str, list[float]]] = {}
    scales: dict[str, int] = {}
    started = time.perf_counter()
    for seed in args.seeds:
        seeded = base + [f"seed={seed}", f"data.split.seed={seed}"]
        pre = transfer(config=load_config(CONFIG, seeded), stages=["acquire", "pretrain"])
        backbone = f"{pre['url']}/pretrain/backbone/model.safetensors"
        for budget in args.labels:
            labels = [] if budget == "all" else [f"finetune.labels_per_class={int(budget)}"]
            scale = scales[budget] = epoch_scale(pre_summary(pre, seeded), budget)
            for name, overrides in variants(lo, hi, epochs, backbone, scale).items():
                config = load_config(CONFIG, seeded + ["pretrain.enabled=false", *labels, *overrides])
                result = transfer(config=config, stages=["acquire", "finetune", "evaluate"])
                summary = Run(config, result["run_id"]).summary()
                scores.setdefault(budget, {}).setdefault(name, []).append(summary["metrics"]["test"]["accuracy"])
                accuracy = scores[budget][name][-1]
                print(f"seed {seed} labels {budget:>4} {name:15s} test accuracy {accuracy:.4f}", flush=True)

    tables = []
    for budget, arms in scores.items():
        rows = [f"labels per class: {budget}", "", "| strategy | test accuracy (mean ± std) | runs |", "|---|---|---|"]
        for name, values in arms.items():
            rows.append(f"| {name} | {mean_std(values)} | {len(values)} |")
        tables.append("\n".join(rows))
    record = {"seeds": args.seeds, "lr": [lo, hi], "epochs": 1 + epochs, "epoch_scale": scales}
    record.update({"labels": args.labels, "accuracy": scores})
    write_report("finetune_strategies", "\n\n".join(tables), record, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
