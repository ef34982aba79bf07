"""Run every benchmark (or those named): `python -m tests.benchmarks [--quick] [names...]`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from rich.console import Console
from rich.table import Table

import tests.benchmarks as pkg
from tests.benchmarks.results import write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("names", nargs="*", help="benchmark modules to run (default: all), e.g. training_loop")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repetitions")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks every benchmark runs (figures not recorded)"
    )
    args = parser.parse_args(argv)
    modules = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name.startswith("bench_"))
    if args.names:
        modules = [m for m in modules if m.removeprefix("bench_") in args.names or m in args.names]
    table = Table(title="graftflow benchmarks (ratio: higher is better)")
    for col in ("benchmark", "value", "baseline", "ratio", "target", "met"):
        table.add_column(col)
    all_results = []
    for name in modules:
        results = importlib.import_module(f"tests.benchmarks.{name}").run(quick=args.quick, smoke=args.smoke)
        if not args.smoke:
            write(results)
        all_results += results
        for r in results:
            ratio = r.ratio
            table.add_row(
                r.name,
                f"{r.value:.4g} {r.unit}",
                "-" if r.baseline is None else f"{r.baseline:.4g} {r.unit}",
                "-" if ratio is None else f"{ratio:.2f}×",
                r.target,
                "-" if r.met is None else ("yes" if r.met else "NO"),
            )
    Console(soft_wrap=True).print(table)
    for r in all_results:
        if r.baseline is None and r.notes:  # no baseline: the notes say what the value was measured on
            print(f"{r.name}: {r.value:.4g} {r.unit} — {r.notes}")
    print("smoke run: nothing recorded" if args.smoke else f"results: .graft/bench/ ({len(all_results)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
