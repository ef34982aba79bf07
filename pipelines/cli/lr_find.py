"""`graft lr-find CONFIG`: the LR range test on the fine-tuning task; weights are untouched."""

from __future__ import annotations

import argparse

from graftflow.pipelines.cli.common import (
    add_config_arguments,
    prefect_defaults,
    quiet_prefect_console,
    run_id_problems,
)


def register(sub: argparse._SubParsersAction) -> None:
    finder = sub.add_parser("lr-find", help="LR range test for fine-tuning: plot and suggested LR (weights untouched)")
    add_config_arguments(finder)
    finder.add_argument("--run-id", help="use this run's data and pretrained backbone")
    finder.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from graftflow.core.runs import Run
    from graftflow.core.validation import load_checked

    checks = [lambda c: run_id_problems(c, args.run_id)]
    config = load_checked(args.config, args.set or [], ["acquire"], checks=checks).config
    run = Run.open(config, args.run_id)
    prefect_defaults()
    from graftflow.pipelines.flows import lr_find

    quiet_prefect_console(args.verbose)

    result = lr_find(config=config, run_id=run.run_id)
    found = run.summary()["lr_find"]
    print(
        f"suggested head LR: {found['suggested_lr']:.3g}  (steepest descent; min-loss/10: "
        f"{found.get('min_loss_div10', float('nan')):.3g}; from {found['start_weights']} weights)"
    )
    print(f"plot: {result['url']}/lr_find.png")
    return 0
