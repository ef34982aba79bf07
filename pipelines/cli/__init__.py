"""`graft`: the command line. One module per command under this package; `COMMANDS` lists them.

A command module has `register(subparsers)`, which adds its parser and sets
`func`. User mistakes (a `GraftError`) print one line per problem and exit 2,
with no traceback; a config is checked against the plugins before anything is
written.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys

from graftflow.core.errors import GraftError
from graftflow.pipelines.cli.common import print_error

# modules of this package, in --help order
COMMANDS = ("run", "lr_find", "predict", "models", "plugins", "config", "deploy", "server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graft", description="Transfer-learning pipelines on Prefect.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"graftflow.pipelines.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GraftError as exc:
        return print_error(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def console() -> int:
    """The `graft` executable: `main`, then an exit that skips the interpreter's last full collection.

    At exit Python collects every object still alive once more: with torch, timm and Prefect loaded
    that was ~2 s of every `graft run` (py-spy: `gc_collect_main` after the summary; the same 2 s
    without Prefect). `gc.freeze()` moves them out of the collector's reach; the process ends
    moments later and the OS takes the memory back. Only the executable does this: `main` called
    in a longer-lived process (tests, notebooks) leaves the collector alone.
    """
    code = main()
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(console())
