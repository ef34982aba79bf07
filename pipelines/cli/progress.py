"""What `graft run` shows while it runs: a line per stage, and a bar per training stage.

An observer of the run's events (`graft_on_stage_start/end`, `graft_on_epoch_end`),
registered for the whole command with `process_observer`, so the plugin hosts that
Prefect's tasks make for each stage all report to it; a DDP stage's epochs are relayed
to it from rank 0. On a terminal the epochs drive a rich progress bar with the last
epoch's loss and metrics; written to a file or a pipe, each epoch is one plain line.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from graftflow.core import stage_table, storage
from graftflow.core.config import PipelineConfig
from graftflow.core.hookspecs import hookimpl
from graftflow.core.plugin_manager import process_observer
from graftflow.core.specs import RunInfo

SHOWN_METRICS = ("train_loss", "val_loss", "val_accuracy")  # in this order, then the rest
MAX_METRICS = 4


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """`train_loss 0.412 · val_loss 0.398 · val_accuracy 0.931`: the metrics a person reads first."""
    rest = sorted(n for n in metrics if n not in SHOWN_METRICS and not n.endswith("seconds"))
    names = [n for n in SHOWN_METRICS if n in metrics] + rest
    parts = [f"{n} {metrics[n]:.4g}" for n in names if isinstance(metrics[n], int | float)][:MAX_METRICS]
    return " · ".join(parts)


class TerminalProgress:
    """The run's events on the terminal (stderr): stage lines, epoch bars or lines."""

    def __init__(self, config: PipelineConfig, console: Console | None = None):
        self.config = config
        self.console = console or Console(stderr=True)
        self.animated = self.console.is_terminal  # a bar on a terminal; plain lines in a file or pipe
        self.progress = Progress(
            TextColumn("{task.description:<9}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("epochs  {task.fields[metrics]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.tasks: dict[str, Any] = {}
        self.totals: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def attached(self) -> Iterator[TerminalProgress]:
        """Hear every stage of this process (and of its DDP ranks) while the block runs."""
        with process_observer(self, "graftflow-terminal-progress"):
            try:
                yield self
            finally:
                self.close()

    def close(self) -> None:
        with self._lock:
            if self.progress.live.is_started:
                self.progress.stop()

    def _print(self, text: str) -> None:
        """A line kept whole (paths and numbers stay on one line for whoever reads the log)."""
        console = self.progress.console if self.progress.live.is_started else self.console
        console.print(text, highlight=False, soft_wrap=True)

    @hookimpl
    def graft_on_stage_start(self, run: RunInfo, stage: str) -> None:
        declared = stage_table.stage(stage)
        epochs = declared.epochs(self.config) if declared.epochs is not None else 0
        with self._lock:
            self._print(f"[bold]{stage}[/bold] [dim]· {declared.description}[/dim]")
            if epochs and self.animated:
                if not self.progress.live.is_started:
                    self.progress.start()
                self.tasks[stage] = self.progress.add_task(stage, total=epochs, metrics="")
            self.totals[stage] = epochs

    @hookimpl
    def graft_on_epoch_end(self, run: RunInfo, stage: str, epoch: int, metrics: Mapping[str, float]) -> None:
        text = format_metrics(metrics)
        with self._lock:
            total = max(self.totals.get(stage, 0), epoch)
            if stage in self.tasks:
                self.progress.update(self.tasks[stage], completed=epoch, total=total, metrics=text)
                self.progress.refresh()  # epochs are seconds apart: draw each one now
            else:
                self._print(f"  {stage} epoch {epoch}/{total}  {text}")

    @hookimpl
    def graft_on_stage_end(self, run: RunInfo, stage: str, status: str, seconds: float, outputs) -> None:
        with self._lock:
            task = self.tasks.pop(stage, None)
            if task is not None:
                self.progress.remove_task(task)
                if not self.tasks:
                    self.progress.stop()
            mark = {"completed": "[green]✓[/green]", "skipped": "[yellow]–[/yellow]"}.get(status, "[red]✗[/red]")
            detail = stage_detail(run, stage) if status == "completed" else ""
            self._print(f"{mark} {stage} {status} in {seconds:.1f} s{'  ' + detail if detail else ''}")


def stage_detail(run: RunInfo, stage: str) -> str:
    """One phrase of what the stage found, from summary.json (a display: never fails the run)."""
    try:
        summary = storage.read_json(storage.join(run.url, "summary.json"))
    except Exception:
        return ""
    metrics = summary.get("metrics", {})
    if stage == "acquire" and summary.get("data"):
        data = summary["data"]
        hit = ", cache hit" if data.get("cache_hit") else ""
        return f"{data['rows']} images, {data['classes']} classes{hit} → {data['path']}"
    if stage in ("pretrain", "finetune") and isinstance(metrics.get(stage), dict):
        return format_metrics(metrics[stage])
    if stage == "evaluate" and isinstance(metrics.get("test"), dict):
        return f"accuracy {metrics['test']['accuracy']:.4f} · macro-F1 {metrics['test']['macro_f1']:.4f}"
    if stage == "export" and summary.get("exports"):
        return ", ".join(e["format"] for e in summary["exports"])
    return ""
