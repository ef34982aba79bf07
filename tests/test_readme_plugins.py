"""The README's one-file plugins (a loss, a timm model family) use only the public API and run through `graft run`."""

import ast
import json
import re

import pytest

from tests.support import DIGITS, ROOT, graft, run_dirs


def readme_plugins() -> dict[str, str]:
    """Every ```python block of the README that starts with `# <file>.py`, by file name."""
    blocks = re.findall(r"```python\n(# (\w+\.py)\n.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return {name: code for code, name in blocks}


def run_demo(tmp_path, sets: list[str], env: dict) -> tuple:
    """`graft run` the demo through export with `sets`; its run folder and summary."""
    args = [a for s in sets for a in ("--set", s)]
    proc = graft("run", str(DIGITS), *args, "--stages", "acquire,finetune,evaluate,export", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_dirs(tmp_path / "runs" / "digits-transfer")[0]
    return run, json.loads((run / "summary.json").read_text())


def test_readme_plugins_import_only_the_public_api():
    plugins = readme_plugins()
    assert set(plugins) == {"poly_loss.py", "mobilenet_family.py", "regression_task.py"}
    for name, code in plugins.items():
        modules = {n.module for n in ast.walk(ast.parse(code)) if isinstance(n, ast.ImportFrom)}
        modules |= {a.name for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Import) for a in n.names}
        ours = {m for m in modules if m.startswith("graftflow")}
        assert ours == {"graftflow.core"}, (name, ours)


def test_the_readme_task_declares_its_own_monitor(tmp_path):
    """`finetune.monitor` is checked against what the task declares: the plugin's `val_mae` is accepted (and
    minimised), a metric it does not report is one line listing what it does."""
    from graftflow.core.config import PipelineConfig
    from graftflow.core.errors import ConfigError
    from graftflow.core.plugin_manager import PluginHost
    from graftflow.core.tasks import resolve_monitor
    from graftflow.core.validation import validate_config

    path = tmp_path / "regression_task.py"
    path.write_text(readme_plugins()["regression_task.py"])
    host = PluginHost(env={"GRAFT_PLUGINS": str(path)})
    task = host.tasks.get("number")
    assert resolve_monitor(task, "val_mae").mode == "min" and resolve_monitor(task, "val_loss").mode == "min"
    config = {"task": "number", "finetune": {"loss": "mse", "monitor": "val_accuracy"}}
    with pytest.raises(ConfigError) as info:
        validate_config(PipelineConfig.model_validate(config), host)
    line = (
        "finetune.monitor: task 'number' and method 'standard' do not report 'val_accuracy'; "
        "available: val_loss, val_mae"
    )
    assert line in str(info.value)


@pytest.mark.slow
def test_readme_plugins_run_through_graft_run(prefect_api, tmp_path):
    paths = []
    for name, code in readme_plugins().items():
        if name == "regression_task.py":
            continue
        path = tmp_path / "elsewhere" / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(code)
        paths.append(str(path))
    env = {"GRAFT_PLUGINS": ",".join(paths)}
    listing = graft("plugins", "--json", env=env)
    assert listing.returncode == 0, listing.stderr
    names = {(r["kind"], r["name"]) for r in json.loads(listing.stdout)}
    assert {("loss", "poly1"), ("model_family", "mobilenet")} <= names
    sets = [
        f"artifact_root={tmp_path / 'runs'}",
        f"data.cache_dir={tmp_path / 'ds'}",
        "model.family=mobilenet",
        "model.variant=mobilenetv3_small_050",
        "data.image_size=32",
        "finetune.loss={name: poly1, epsilon: 2.0}",
        "finetune.lr=[0.001, 0.01]",
        "pretrain.enabled=false",
        "finetune.freeze_epochs=0",
        "finetune.epochs=4",
        "export.formats=[onnx]",
    ]
    run, summary = run_demo(tmp_path, sets, env)
    assert summary["finetune"]["loss"] == "poly1"
    groups = [g["name"] for g in summary["param_groups"]]
    assert len(groups) >= 4 and groups[-1] == "head"  # timm's own groups for MobileNetV3, input → head
    lrs = [g["lr"] for g in summary["param_groups"]]
    assert lrs[0] == pytest.approx(0.001) and lrs[-1] == pytest.approx(0.01) and lrs == sorted(lrs)
    assert summary["metrics"]["test"]["accuracy"] > 0.5  # five classes: chance is 0.2
    assert summary["exports"][0]["format"] == "onnx"


@pytest.mark.slow
def test_readme_task_plugin_runs_through_graft_run(prefect_api, tmp_path, monkeypatch, capsys):
    """A one-file task from outside the repository (GRAFT_PLUGINS): regressing the digit an image shows.

    `graft run` is the real console script (its own process, through Prefect); the listing and
    `graft predict` run the same CLI in this process, which saves two interpreter starts."""
    from graftflow.pipelines.cli import main as graft_main

    path = tmp_path / "elsewhere" / "regression_task.py"
    path.parent.mkdir()
    path.write_text(readme_plugins()["regression_task.py"])
    env = {"GRAFT_PLUGINS": str(path)}
    monkeypatch.setenv("GRAFT_PLUGINS", str(path))
    assert graft_main(["plugins", "--json"]) == 0
    rows = {(r["kind"], r["name"]): r for r in json.loads(capsys.readouterr().out)}
    assert rows[("task", "number")]["origin"] == "GRAFT_PLUGINS" and ("loss", "mse") in rows
    sets = [
        f"artifact_root={tmp_path / 'runs'}",
        f"data.cache_dir={tmp_path / 'ds'}",
        "task=number",
        "finetune.loss=mse",  # the demo config names cross-entropy; left unset, a task's default loss is used
        "pretrain.enabled=false",
        "finetune.classes=null",
        "finetune.freeze_epochs=0",
        "augment.preview=0",
        "finetune.labels_per_class=40",  # 400 training images: enough to learn the values (200, 8 px, 4 epochs: not)
        "finetune.epochs=6",
        "finetune.lr=0.003",
        "finetune.monitor=val_mae",  # the plugin's own metric, minimised as its Monitor declares
        "export.formats=[onnx]",
    ]
    run, summary = run_demo(tmp_path, sets, env)
    assert summary["finetune"]["task"] == "number" and summary["finetune"]["loss"] == "mse"
    assert (summary["finetune"]["monitor"], summary["finetune"]["monitor_mode"]) == ("val_mae", "min")
    test = summary["metrics"]["test"]
    assert test["mae"] < 0.6 * test["mean_baseline_mae"], test  # it learned the digits' values
    assert summary["exports"][0]["format"] == "onnx"
    out = tmp_path / "values.csv"
    assert graft_main(["predict", str(run), "--split", "test", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "source,value" and len(lines) == test["images"] + 1
