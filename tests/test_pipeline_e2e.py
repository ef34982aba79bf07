"""The transfer pipeline through real Prefect flows (the test harness's server, a shared real one, or ephemeral)."""

import json
from pathlib import Path

import pytest

from graftflow.core.config import load_config
from graftflow.core.runs import Run
from tests.support import DIGITS, graft, run_dirs
from tests.test_plugin_manager import EXTERNAL_LOSS

pytestmark = pytest.mark.slow


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_transfer_flow_writes_the_run_record(prefect_harness, tiny_overrides, tmp_path):
    from graftflow.pipelines.flows import transfer

    config = load_config(DIGITS, tiny_overrides)
    result = transfer(config=config)
    run_dir = Path(result["url"])
    summary = summary_of(run_dir)
    assert [s for s, e in summary["stages"].items() if e["status"] == "completed"] == [
        "acquire",
        "augment",
        "pretrain",
        "finetune",
        "evaluate",
        "export",
    ]
    assert all(e["seconds"] > 0 for e in summary["stages"].values())
    assert summary["config"]["finetune"]["lr"] == [0.0003, 0.003]
    test = summary["metrics"]["test"]
    assert 150 < test["images"] < 200  # 20% of the ~900 images of digits 5–9
    assert test["accuracy"] > 0.8 and test["macro_f1"] > 0.8  # 5 classes: chance is 0.2
    assert set(test["per_class"]) == {"5", "6", "7", "8", "9"}
    groups = summary["param_groups"]
    assert [g["name"] for g in groups][-1] == "head" and len(groups) >= 3
    lrs = [g["lr"] for g in groups]
    assert lrs[0] == pytest.approx(3e-4) and lrs[-1] == pytest.approx(3e-3) and lrs == sorted(lrs)
    assert all(g["n_params"] > 0 for g in groups)
    assert {e["format"] for e in summary["exports"]} == {"torchscript", "onnx", "safetensors"}
    assert all(e["max_abs_diff"] <= 1e-4 and Path(e["path"]).is_file() for e in summary["exports"])
    assert (run_dir / "evaluate" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "augment" / "preview.png").is_file()
    load = summary["finetune"]["weights_load"]
    assert load["source"] == "pretrain backbone" and load["loaded"] > 0 and load["unexpected"] == []
    assert not [p for p in run_dir.iterdir() if ".partial-" in p.name]


def test_stages_run_alone_and_later_ones_read_the_same_run(prefect_harness, tiny_overrides):
    from graftflow.pipelines.flows import acquire, evaluate, finetune

    config = load_config(DIGITS, tiny_overrides + ["pretrain.enabled=false"])
    first = acquire(config=config)
    run_id = Path(first["url"]).parent.name
    with pytest.raises(Exception, match="needs the 'finetune' stage of run"):
        evaluate(config=config, run_id=run_id)
    finetune(config=config, run_id=run_id)
    evaluate(config=config, run_id=run_id)
    summary = Run(config, run_id).summary()
    assert summary["stages"]["evaluate"]["status"] == "completed"
    assert summary["stages"]["finetune"]["status"] == "completed"
    assert summary["finetune"]["weights_load"] is None  # from scratch: no pretrain stage in this run
    assert "pretrain" not in summary["stages"]


def test_artifact_root_can_be_any_fsspec_url(prefect_harness, tiny_overrides):
    import fsspec

    from graftflow.pipelines.flows import transfer

    overrides = [o for o in tiny_overrides if not o.startswith("artifact_root")] + ["artifact_root=memory://graft-runs"]
    config = load_config(DIGITS, overrides + ["export.formats=[safetensors]"])
    result = transfer(config=config, stages=["acquire", "finetune", "evaluate", "export"])
    fs = fsspec.filesystem("memory")
    summary = json.loads(fs.cat_file(result["summary"].removeprefix("memory://")))
    assert summary["metrics"]["test"]["accuracy"] > 0.2
    assert fs.exists(result["url"].removeprefix("memory://") + "/export/safetensors/model.safetensors")


def test_cli_stages_then_resume_same_run(prefect_api, tmp_path, tiny_overrides):
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    first = graft("run", str(DIGITS), *sets, "--stages", "acquire,augment")
    assert first.returncode == 0, first.stderr[-3000:]
    runs = run_dirs(tmp_path / "runs" / "digits-transfer")
    assert len(runs) == 1
    run_id = runs[0].name
    second = graft("run", str(DIGITS), *sets, "--stages", "pretrain,finetune,evaluate", "--run-id", run_id)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "test accuracy:" in second.stdout and f"summary: {runs[0]}/summary.json" in second.stdout
    summary = summary_of(runs[0])
    assert {s for s, e in summary["stages"].items() if e["status"] == "completed"} == {
        "acquire",
        "augment",
        "pretrain",
        "finetune",
        "evaluate",
    }
    assert summary["data"]["cache_hit"] is False
    third = graft("run", str(DIGITS), *sets, "--stages", "acquire")  # unchanged inputs: the store is reused
    assert third.returncode == 0
    newest = max(run_dirs(tmp_path / "runs" / "digits-transfer"), key=lambda p: p.stat().st_mtime)
    assert summary_of(newest)["data"]["cache_hit"] is True


def test_external_loss_plugin_is_used_by_graft_run(tmp_path, tiny_overrides):
    plugin = tmp_path / "outside" / "squared_loss.py"
    plugin.parent.mkdir()
    plugin.write_text(EXTERNAL_LOSS)
    marker = tmp_path / "marker.txt"
    sets = [a for o in tiny_overrides for a in ("--set", o)]
    proc = graft(
        "run",
        str(DIGITS),
        *sets,
        "--set",
        "finetune.loss.name=squared-error",
        "--stages",
        "acquire,finetune,evaluate",
        ephemeral=True,  # `make run`'s mode: its own temporary server
        env={"GRAFT_PLUGINS": str(plugin), "SQUARED_LOSS_MARKER": str(marker)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.read_text() == "built\n"
    run_dir = run_dirs(tmp_path / "runs" / "digits-transfer")[0]
    summary = summary_of(run_dir)
    assert summary["config"]["finetune"]["loss"] == {"name": "squared-error"}
    assert summary["stages"]["evaluate"]["status"] == "completed"
