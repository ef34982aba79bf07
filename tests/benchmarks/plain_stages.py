"""The demo's stages as plain function calls in one Python process, no Prefect: the orchestration
benchmark's baseline (`python -m tests.benchmarks.plain_stages CONFIG [--set FIELD=VALUE ...]`).

It does what a `graft run` must do anyway — read and check the config against the plugins, open a
run, run every stage of the chain through `execute_stage` (the same function the Prefect task calls)
— and nothing else, so the wall-time difference to `graft run` is what the flows, tasks, the
ephemeral server and our bookkeeping around them cost. Prints the stage seconds as one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.plain_stages")
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)

    from graftflow.core.plugin_manager import PluginHost
    from graftflow.core.runs import Run
    from graftflow.core.stage_table import CHAIN
    from graftflow.core.stages.base import execute_stage
    from graftflow.core.validation import load_checked

    config = load_checked(args.config, args.set, list(CHAIN)).config
    host = PluginHost(config.plugins)
    run = Run.open(config)
    seconds = {stage: execute_stage(stage, config, run, host)["seconds"] for stage in CHAIN}
    print(json.dumps({"run_id": run.run_id, "stage_seconds": seconds}))
    gc.freeze()  # exits as the `graft` executable does (pipelines/cli: console), without the final collection
    return 0


if __name__ == "__main__":
    sys.exit(main())
