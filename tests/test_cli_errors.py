"""Bad input: one clear line per problem, exit code 2, nothing written."""

import pytest

from graftflow.pipelines.cli import main
from tests.support import DIGITS, graft, run_dirs


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--set", "model.family=resnt"],
            "error: model.family: unknown model family 'resnt'; available: resnet, timm, vit",
        ),
        (["--set", "finetune.lr=-0.01"], "error: finetune.lr: learning rate must be > 0, got -0.01"),
        (
            ["--set", "data.source={kind: folder, path: /no/such/images}"],
            "error: data.source.path: folder '/no/such/images' does not exist",
        ),
        (["--set", "model.variant=huge"], "error: model.variant: unknown variant 'huge' of family 'resnet'"),
        (
            ["--set", "finetune.loss.name=nope"],
            "error: finetune.loss.name: unknown loss 'nope'; available: class-balanced, cross-entropy, distillation",
        ),
        (["--set", "finetune.loss.label_smothing=0.1"], "error: finetune.loss.label_smothing: unknown field"),
        (["--set", "export.formats=[onnx, tflite]"], "error: export.formats[1]: unknown exporter 'tflite'"),
        (["--stages", "acquire,train"], "error: --stages: unknown stage 'train'"),
    ],
)
def test_bad_config_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    code = main(
        [
            "run",
            str(DIGITS),
            "--set",
            f"artifact_root={tmp_path / 'runs'}",
            "--set",
            f"data.cache_dir={tmp_path / 'ds'}",
            *args,
        ]
    )
    out = capsys.readouterr()
    assert code == 2, out.err
    assert out.err.startswith(message), out.err
    assert len(out.err.strip().splitlines()) == 1, out.err
    assert list(tmp_path.iterdir()) == []


def test_the_console_script_exits_2_without_traceback(tmp_path):
    proc = graft("run", str(DIGITS), "--set", f"artifact_root={tmp_path / 'runs'}", "--set", "model.family=resnt")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: model.family: unknown model family 'resnt'")
    assert "Traceback" not in proc.stderr + proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_yaml_syntax_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: demo\nfinetune:\n  epochs: 3\n   lr: 0.1\n")
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}:4:") and "YAML syntax error" in err
    assert len(err.strip().splitlines()) == 1


def test_unwritable_artifact_root(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.write_text("a file, not a folder")
    assert main(["run", str(DIGITS), "--set", f"artifact_root={locked}/runs"]) == 2
    assert capsys.readouterr().err.startswith(f"error: artifact_root: cannot write to '{locked}/runs'")


@pytest.mark.slow
def test_single_class_data_fails_the_run_in_one_line(prefect_api, tmp_path):
    """Found inside the flow (the data must be read first), still one line and exit 2."""
    import io

    import numpy as np
    from PIL import Image

    for i in range(12):
        (tmp_path / "imgs" / "only").mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8), i * 20, np.uint8)).save(buf, format="PNG")
        (tmp_path / "imgs" / "only" / f"{i}.png").write_bytes(buf.getvalue())
    proc = graft(
        "run",
        str(DIGITS),
        "--set",
        f"artifact_root={tmp_path / 'runs'}",
        "--set",
        f"data.cache_dir={tmp_path / 'ds'}",
        "--set",
        f"data.source={{kind: folder, path: {tmp_path / 'imgs'}}}",
        "--set",
        "pretrain.enabled=false",
        "--set",
        "finetune.classes=null",
        "--stages",
        "acquire,finetune",
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: finetune.classes: the train split has 1 class(es); training a classifier needs at least 2"
    ]
    assert "Traceback" not in proc.stderr
    run_dir = run_dirs(tmp_path / "runs" / "digits-transfer")[0]
    assert not (run_dir / "finetune").exists() and not list(run_dir.glob(".finetune*"))
