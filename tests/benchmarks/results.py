"""The record every benchmark writes: name, value, baseline, ratio, unit."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

OUT_DIR = Path(".graft/bench")


@dataclass
class Result:
    name: str
    value: float
    baseline: float | None
    unit: str
    higher_is_better: bool = True
    target_ratio: float | None = None  # e.g. 3.0 for "≥ 3× the baseline"
    target_max: float | None = None  # an absolute ceiling in `unit`, e.g. 10.0 for "≤ 10 s of overhead"
    notes: str = ""
    extra: dict = field(default_factory=dict)
    # The median of per-pair ratios, for benchmarks that time ours and the baseline back to back in pairs:
    # load on shared cores then moves both sides of a pair alike and cancels, where a ratio of medians does not.
    paired_ratio: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.paired_ratio is not None:
            return self.paired_ratio
        if not self.baseline:
            return None
        return self.value / self.baseline if self.higher_is_better else self.baseline / self.value

    @property
    def target(self) -> str:
        if self.target_max is not None:
            return f"≤ {self.target_max:g} {self.unit}"
        return "-" if self.target_ratio is None else f"≥ {self.target_ratio:g}×"

    @property
    def met(self) -> bool | None:
        if self.target_max is not None:
            return self.value <= self.target_max
        ratio = self.ratio
        return None if self.target_ratio is None or ratio is None else ratio >= self.target_ratio

    def as_json(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "met": self.met, "machine": machine()}


def machine() -> dict:
    import os

    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write(results: list[Result]) -> list[Path]:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in results:
        path = OUT_DIR / f"{r.name}.json"
        path.write_text(json.dumps(r.as_json(), indent=2))
        paths.append(path)
    return paths
