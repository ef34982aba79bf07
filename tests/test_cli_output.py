"""What the CLI shows: `graft plugins -v` in 80 columns, a quiet `graft run` (Prefect's log with -v),
and the progress display fed by the run's observer events."""

import io
import json
import logging
import re

from rich.console import Console

from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import RunInfo
from graftflow.pipelines.cli import main
from graftflow.pipelines.cli.common import quiet_prefect_console
from graftflow.pipelines.cli.progress import TerminalProgress, format_metrics
from tests.support import DIGITS


def test_graft_plugins_verbose_shows_variants_and_parameters_within_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["plugins", "-v"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out  # nothing cut off: long cells wrap
    assert re.search(r"│ model_family +│ resnet +│ models\.resnet +│ builtin", out)
    assert "variants" in out and " tiny " in out and "vit_base_patch16_224" in out
    assert "label_smoothing" in out and "float = 0.0" in out  # cross-entropy's parameter and its default
    assert "path" in out and "str = required" in out  # the folder source's required parameter
    assert main(["plugins", "-v", "--json"]) == 0
    rows = {(r["kind"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    resnet = rows[("model_family", "resnet")]
    assert "tiny" in resnet["variants"] and {p["name"] for p in resnet["parameters"]} == {"drop_rate", "drop_path_rate"}
    focal = {p["name"]: p for p in rows[("loss", "focal")]["parameters"]}
    assert focal["gamma"]["default"] == "2.0" and focal["gamma"]["description"]


def test_prefect_console_log_is_quiet_unless_verbose():
    import prefect  # noqa: F401  (installs Prefect's console handler on the root logger)
    from prefect.logging.handlers import PrefectConsoleHandler

    stream = io.StringIO()
    handler = PrefectConsoleHandler(stream=stream)
    root = logging.getLogger()
    root.addHandler(handler)

    def emit(name: str, level: int, text: str) -> None:
        handler.handle(logging.LogRecord(name, level, __file__, 1, text, None, None))

    try:
        quiet_prefect_console(verbose=True)
        emit("prefect.flow_runs", logging.INFO, "Beginning flow run 'x'")
        assert "Beginning flow run" in stream.getvalue()
        quiet_prefect_console(verbose=False)
        emit("prefect.flow_runs", logging.INFO, "Finished in state Completed()")
        emit("prefect.task_runs", logging.ERROR, "Task run failed with exception: DataError")
        emit("graft.train", logging.INFO, "finetune-all epoch 3: train_loss=0.1")  # the display shows epochs
        emit("graft.data", logging.INFO, "data.source: store reused (cache hit)")
        emit("graft.stage", logging.WARNING, "observer plugin 'x' failed")
        emit("prefect.task_runs", logging.INFO, "Task run failed with DataError: HTTP 503 - Retry 1/3 will start 5s")
        emit("prefect.flow_runs", logging.CRITICAL, "the API is gone")
        shown = stream.getvalue()
        assert "Finished in state" not in shown and "exception: DataError" not in shown and "epoch 3" not in shown
        assert "(cache hit)" in shown and "observer plugin" in shown and "Retry 1/3" in shown
        assert "the API is gone" in shown
    finally:
        root.removeHandler(handler)


def test_the_progress_display_follows_every_host_made_while_it_is_attached(tmp_path):
    from graftflow.core.config import load_config

    config = load_config(DIGITS, [f"artifact_root={tmp_path}"])
    out = io.StringIO()
    display = TerminalProgress(config, Console(file=out, force_terminal=True, width=100, color_system=None))
    run = RunInfo(config.name, "r1", str(tmp_path / "r1"))
    with display.attached():
        host = PluginHost()  # as a Prefect task makes one per stage
        host.stage_started(run, "finetune")
        host.epoch_ended(run, "finetune", 1, {"train_loss": 0.9, "val_loss": 0.8, "val_accuracy": 0.5})
        host.epoch_relayed(run, "finetune", 2, {"train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.75})  # DDP
        assert display.progress.tasks[0].completed == 2 and display.progress.tasks[0].total == 6
        host.stage_ended(run, "finetune", "completed", 3.25, {})
    assert not display.progress.live.is_started
    shown = out.getvalue()
    assert "finetune · Fine-tune" in shown and "✓ finetune completed in 3.2 s" in shown
    assert "train_loss 0.5 · val_loss 0.4 · val_accuracy 0.75" in shown  # the bar's last state
    assert "2/6" in shown
    later = PluginHost()  # made after the display was detached: it hears nothing
    later.stage_started(run, "acquire")
    assert "acquire" not in out.getvalue()


def test_epochs_relayed_from_ddp_reach_only_run_time_observers():
    heard = []

    class Observer:
        from graftflow.core.hookspecs import hookimpl

        @hookimpl
        def graft_on_epoch_end(self, run, stage, epoch, metrics):
            heard.append((stage, epoch))

    host = PluginHost()
    host.add_observer(Observer(), "recorder")
    host.epoch_relayed(RunInfo("x", "r", "/tmp/r"), "pretrain", 3, {"train_loss": 1.0})
    assert heard == [("pretrain", 3)]


def test_metrics_line_reads_losses_and_accuracy_first():
    text = format_metrics({"val_accuracy": 0.9, "epoch_seconds": 1.5, "lr_head": 0.001, "train_loss": 0.25})
    assert text == "train_loss 0.25 · val_accuracy 0.9 · lr_head 0.001"
