"""What every experiment ends with: mean ± std cells, and the table written beside its record."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

OUT = Path(".graft/experiments")


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {std:.4f}"


def write_report(name: str, table: str, record: dict[str, Any], started: float) -> None:
    """`OUT/<name>.md` (the table) and `OUT/<name>.json` (the record and the seconds it took), then the table."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.md").write_text(table + "\n")
    record = {**record, "seconds": round(time.perf_counter() - started, 1)}
    (OUT / f"{name}.json").write_text(json.dumps(record, indent=2))
    print(table)
    print(f"written to {OUT}/{name}.md ({time.perf_counter() - started:.0f} s)")
