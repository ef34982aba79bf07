"""`graft run CONFIG`: the transfer pipeline (or some of its stages) with no server needed.

Everything is checked first (the config, the plugins, `--stages`, `--run-id`): a
mistake is one line per problem and exit 2 before anything is written. While the
stages run, the terminal shows a line per stage and a bar per training stage
(Prefect's own log with `-v`); a failure ends with the stage table so far, the run
id, the error and the command that resumes the run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from contextlib import ExitStack

from graftflow.pipelines.cli.common import (
    add_config_arguments,
    credential_problems,
    prefect_defaults,
    print_stage_table,
    print_summary,
    quiet_prefect_console,
    run_id_problems,
)


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a pipeline config (no server needed)")
    add_config_arguments(run)
    run.add_argument("--stages", help="comma-separated stages to run (default: all)")
    run.add_argument("--run-id", help="continue this run: completed stages are skipped, an interrupted one resumes")
    run.add_argument("--force", action="store_true", help="with --run-id: run completed stages again")
    run.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from graftflow.pipelines import early_server

    prefect_defaults()  # before the server starts: it inherits them
    try:  # the early server (pipelines/early_server.py) starts once the config has checked (`on_parsed`)
        with ExitStack() as held:  # the storage credentials, for the whole command
            return _run(args, held)
    finally:
        early_server.stop()


def _save_plugin_index(checked) -> None:
    """The listing of the plugins this run loaded, for the next `graft plugins`."""
    from graftflow.core import plugin_index
    from graftflow.pipelines.cli.plugins import listing_rows

    plugin_index.cached(checked.config.plugins, lambda: listing_rows(checked.host))


def _run(args: argparse.Namespace, held: ExitStack) -> int:
    from graftflow.core.errors import GraftError
    from graftflow.core.runs import Run
    from graftflow.core.stage_table import parse_stages
    from graftflow.core.validation import load_checked

    stages, problems = None, []
    try:
        stages = parse_stages(args.stages)
    except GraftError as exc:
        problems.append(str(exc))
    prefect_defaults()  # a Secret block named in the config is read through Prefect's client
    checked = load_checked(
        args.config,
        args.set or [],
        stages,
        problems,
        checks=[lambda c: _credential_problems(c, held), lambda c: run_id_problems(c, args.run_id)],
        on_parsed=lambda _config: _start_server(),
    )
    config = checked.config
    _save_plugin_index(checked)
    run = Run.open(config, args.run_id)  # an unwritable artifact_root fails here, before Prefect starts

    from graftflow.pipelines.cli.progress import TerminalProgress
    from graftflow.pipelines.flows import transfer

    quiet_prefect_console(args.verbose)
    print(f"run {run.run_id} → {run.url}", flush=True)
    try:
        with TerminalProgress(config).attached(), _own_server_settings():
            result = transfer(config=config, stages=stages, run_id=run.run_id, force=args.force)
    except BaseException as exc:
        return _failed(args, run, exc)
    print_summary(run.summary(), result["summary"])
    return 0


def _start_server() -> None:
    """The temporary Prefect server, launched once the config is known to be good (`load_checked`'s
    `on_parsed`): it comes up while torch, the plugins and Prefect are imported and the run opens,
    and a config with a mistake is answered without starting it (issue 19: in under a second)."""
    from graftflow.pipelines import early_server

    early_server.start()


def _credential_problems(config, held: ExitStack) -> list[str]:
    """A `storage.secret_block` is read from a Prefect server: then the server starts before the check."""
    if config.storage.secret_block:
        _start_server()
    return credential_problems(config, held)


def _own_server_settings():
    """On graft run's own temporary server: no flow-run heartbeats. They exist so a server can tell
    crashed runs of other processes; this server ends with this process, and every flow's exit waits
    up to a second for its heartbeat thread (7 flows: ~3.5 s of the run, measured)."""
    from contextlib import nullcontext

    from graftflow.pipelines import early_server

    if not early_server.running():
        return nullcontext()
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    early_server.ready()
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _failed(args: argparse.Namespace, run, exc: BaseException) -> int:
    """The stage table so far, the run id, the error and how to resume; a bug keeps its traceback."""
    from graftflow.core.errors import GraftError
    from graftflow.pipelines.cli.common import print_error

    try:
        print_stage_table(run.summary())
    except Exception:  # the summary itself may be what failed; the error below still says why
        pass
    print(
        f"run {run.run_id} did not finish; after fixing the problem, continue it with:\n  {resume_command(args, run)}"
    )
    sys.stdout.flush()
    if isinstance(exc, GraftError):
        return print_error(exc)
    raise exc


def resume_command(args: argparse.Namespace, run) -> str:
    """The command line that continues this run: the same config and overrides, plus --run-id."""
    words = ["graft", "run", args.config]
    for assignment in args.set or []:
        words += ["--set", assignment]
    if args.stages:
        words += ["--stages", args.stages]
    return shlex.join([*words, "--run-id", run.run_id])
