"""Cross-run cache keys, the training-curves image, and the TensorBoard tracker (no Prefect)."""

import shutil
from pathlib import Path

import pytest

from graftflow.core import cache
from graftflow.core.config import load_config
from graftflow.core.images import save_training_curves
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import RunInfo
from tests.support import DIGITS


def test_a_change_invalidates_its_stage_and_everything_after_it_only():
    base = cache.stage_keys(load_config(DIGITS))
    assert base == cache.stage_keys(load_config(DIGITS))  # stable
    ft = cache.stage_keys(load_config(DIGITS, ["finetune.epochs=2"]))
    assert [s for s in base if base[s] != ft[s]] == ["finetune", "evaluate", "export"]
    data = cache.stage_keys(load_config(DIGITS, ["data.image_size=8"]))
    assert all(base[s] != data[s] for s in base)
    exp = cache.stage_keys(load_config(DIGITS, ["export.formats=[onnx]"]))
    assert [s for s in base if base[s] != exp[s]] == ["export"]


def test_editing_a_source_file_changes_every_stage_key(tmp_path, monkeypatch):
    """The code version hashes core/ and plugins/: a copy of the tree keys the same, an edited plugin does not."""
    root = Path(cache.__file__).resolve().parents[1]
    for package in ("core", "plugins"):
        shutil.copytree(root / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    config = load_config(DIGITS)
    real = cache.stage_keys(config)

    def keys_of_the_copy() -> dict[str, str]:
        with monkeypatch.context() as patch:
            patch.setattr(cache, "__file__", str(tmp_path / "core" / "cache.py"))  # code_version hashes this tree
            cache.code_version.cache_clear()
            try:
                return cache.stage_keys(config)
            finally:
                cache.code_version.cache_clear()

    assert keys_of_the_copy() == real  # the same code: the same keys
    exporters = tmp_path / "plugins" / "exporters.py"
    exporters.write_text(exporters.read_text() + "\n# a one-line edit\n")
    edited = keys_of_the_copy()
    assert all(edited[s] != real[s] for s in real)  # every stage: the code version is in each key
    assert cache.stage_keys(config) == real


def test_pointer_names_a_run_only_while_it_has_the_stages(tmp_path):
    from graftflow.core.runs import Run

    config = load_config(DIGITS, [f"artifact_root={tmp_path}"])
    run = Run.open(config)
    assert cache.cached_run(config, ["acquire"]) is None
    run.update(lambda s: s["stages"].__setitem__("acquire", {"status": "completed", "outputs": {}}))
    cache.record(config, "acquire", run.run_id)
    assert cache.cached_run(config, ["acquire"]) == run.run_id
    assert cache.cached_run(config, ["acquire", "augment"]) is None  # augment never completed
    assert (
        cache.cached_run(load_config(DIGITS, [f"artifact_root={tmp_path}", "data.image_size=8"]), ["acquire"]) is None
    )
    (tmp_path / config.name / run.run_id / "summary.json").unlink()
    assert cache.cached_run(config, ["acquire"]) is None  # the run is gone: a miss


def test_training_curves_png(tmp_path):
    rows = [
        {"epoch": 1, "phase": "finetune-head", "train_loss": 1.2, "val_loss": 1.0, "val_accuracy": 0.5},
        {"epoch": 2, "phase": "finetune-all", "train_loss": 0.7, "val_loss": 0.6, "val_accuracy": 0.8},
    ]
    path = save_training_curves(rows, tmp_path / "curves.png", "fine-tuning")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_tensorboard_tracker_is_off_by_default_and_writes_scalars_when_named(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    default = PluginHost(env={})
    assert "graftflow.plugins.trackers.tensorboard" not in {r["plugin"] for r in default.listing()}
    host = PluginHost(["graftflow.plugins.trackers.tensorboard"], env={})
    assert {"kind": "observer", "name": "graftflow.plugins.trackers.tensorboard"}.items() <= next(
        r for r in host.listing() if r["plugin"] == "graftflow.plugins.trackers.tensorboard"
    ).items()
    run = RunInfo("demo", "r1", str(tmp_path / "demo" / "r1"), {})
    for epoch, acc in ((1, 0.5), (2, 0.75)):
        host.epoch_ended(run, "finetune", epoch, {"val_accuracy": acc, "train_loss": 1.0 / epoch})
    host.stage_ended(run, "finetune", "completed", 3.5, {})
    events = EventAccumulator(str(tmp_path / "demo" / "r1" / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("finetune/val_accuracy")] == [(1, 0.5), (2, 0.75)]
    assert "stages/finetune_seconds" in events.Tags()["scalars"]
