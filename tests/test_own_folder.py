"""The README's "your own folder of images" config, exactly as printed there, end to end.

Run from another folder than the config's (its relative `path: images` must still be found),
with the store going to the user's cache folder (`GRAFT_CACHE_DIR` here) and shown in the summary.
"""

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from graftflow.pipelines.cli import main
from tests.support import ROOT

pytestmark = pytest.mark.slow


def readme_block(heading: str, language: str = "yaml") -> str:
    """The first fenced block of `language` after `heading` in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    match = re.search(rf"```{language}\n(.*?)```", section, re.S)
    assert match, f"no {language} block after {heading!r} in README.md"
    return match.group(1)


def class_images(folder, classes=("cat", "dog", "fox"), per_class=12, seed=0):
    """RGB images of different sizes whose colour and stripe direction say their class."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = 20 + i % 3 * 4, 24
            img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
            img[..., c] += 150
            if c == 1:
                img[::4] = 250
            elif c == 2:
                img[:, ::4] = 250
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            (folder / name / f"{i:03d}.png").write_bytes(buf.getvalue())


def test_the_readme_config_runs_end_to_end_on_a_folder_of_images(prefect_api, tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    class_images(project / "images")
    config = project / "my-images.yaml"
    config.write_text(readme_block("### Your own folder of images"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths in the file resolve from its folder, not from here
    monkeypatch.setenv("GRAFT_CACHE_DIR", str(tmp_path / "cache"))

    code = main(["run", str(config)])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]

    summary_path = Path(out.out.strip().splitlines()[-1].removeprefix("summary: ")).resolve()
    summary = json.loads(summary_path.read_text())
    assert summary_path.is_relative_to(elsewhere / ".graft" / "runs" / "my-images")  # artifact_root: from here
    stages = summary["stages"]
    assert [s for s, e in stages.items() if e["status"] == "completed"] == [
        "acquire",
        "augment",
        "finetune",
        "evaluate",
        "export",
    ]
    assert stages["pretrain"]["status"] == "skipped"  # pretraining only when asked
    data = summary["data"]
    assert data["class_names"] == ["cat", "dog", "fox"] and data["rows"] == 36
    assert data["path"].startswith(str(tmp_path / "cache"))  # the user's cache folder ...
    assert f"→ {data['path']}" in out.out  # ... shown in the summary
    ft = summary["finetune"]
    assert ft["phases"] == ["all"] and ft["weights_load"] is None  # nothing pretrained: no head-only epoch
    assert ft["epochs_run"] == 5
    metrics = summary["metrics"]["finetune"]
    assert metrics["seconds"] == stages["finetune"]["seconds"]  # the stage's seconds, not an epoch's
    assert metrics["epoch_seconds"] < metrics["seconds"]
    assert {e["format"] for e in summary["exports"]} == {"onnx", "safetensors"}
    assert summary["metrics"]["test"]["images"] == 6

    # what the terminal showed: a line per stage, a line per epoch (not a terminal), no Prefect log
    err = out.err
    for stage in ("acquire", "augment", "pretrain", "finetune", "evaluate", "export"):
        assert re.search(rf"^[✓–] {stage} (completed|skipped) in \d+\.\d s", err, re.M), err
    assert re.search(r"^  finetune epoch 5/5  train_loss \d", err, re.M), err
    assert "3 classes" in err and "accuracy" in err
