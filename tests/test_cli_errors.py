"""Bad input: one clear line per problem, exit code 2, nothing written."""

import json
import shlex

import pytest

from graftflow.pipelines.cli import main
from tests.support import DIGITS, ROOT, graft, run_dirs


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
            "error: finetune.loss.name: unknown loss 'nope'; available: asl, bce, bce-dice, class-balanced, "
            "cross-entropy, dice, distillation",
        ),
        (["--set", "finetune.loss.label_smothing=0.1"], "error: finetune.loss.label_smothing: unknown field"),
        (["--set", "export.formats=[onnx, tflite]"], "error: export.formats[1]: unknown exporter 'tflite'"),
        (["--stages", "acquire,train"], "error: --stages: unknown stage 'train'"),
        (
            ["--set", "finetune.lr=[1e-4,"],
            "error: finetune.lr: --set value '[1e-4,' is not valid YAML: expected the node content",
        ),
        (
            ["--set", "data.mean=[0.5, 0.5]"],  # the demo has 1 channel
            "error: data.mean: 2 values for 1 channel (data.channels); give one value for all channels, "
            "or one per channel",
        ),
        (
            ["--set", "model.family=vit", "--set", "model.variant=micro", "--set", "data.image_size=18"],
            "error: model.variant: vit 'micro' cuts images into 4×4 patches, so the image size must be a "
            "multiple of 4; got 18",
        ),
        (
            ["--run-id", "nosuchrun", "--stages", "evaluate"],
            "error: --run-id: there is no run 'nosuchrun' of 'digits-transfer' under",
        ),
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


def test_the_readmes_example_reports_both_of_its_problems(tmp_path, capsys):
    """README promises one line per problem; its example has two (a pydantic one and a plugin one)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = text[text.index("$ graft run digits.yaml --set model.family=resnt") :].split("```")[0].splitlines()
    command, expected = shlex.split(shown[0].removeprefix("$ ")), shown[1:]
    assert command[:3] == ["graft", "run", "digits.yaml"] and len(expected) == 2
    code = main(["run", str(DIGITS), "--set", f"artifact_root={tmp_path / 'runs'}", *command[3:]])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [line for line in expected if line]
    assert list(tmp_path.iterdir()) == []


def test_every_problem_of_a_config_file_at_once(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text(
        "data:\n  channels: 3\n  mean: [0.5, 0.5]\n  source: {kind: folder, path: no-such-images}\n"
        "model: {family: resnet, variant: huge}\nfinetune: {epochs: -1, loss: {name: focal, gama: 2}}\n"
        "plugins: [no_such_plugin_here.py]\n"
    )
    assert main(["run", str(config), "--set", f"artifact_root={tmp_path / 'runs'}", "--stages", "acquire,x"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [
        "error: --stages: unknown stage 'x'; stages are acquire, augment, pretrain, finetune, evaluate, export",
        "error: data.mean: 2 values for 3 channels (data.channels); give one value for all channels, or one per "
        "channel",
        "error: finetune.epochs: Input should be greater than or equal to 0",
        f"error: plugins: plugin file '{tmp_path / 'no_such_plugin_here.py'}' does not exist",
    ]  # a plugin list that does not load stops the checks that need the plugins
    config.write_text(config.read_text().replace("plugins: [no_such_plugin_here.py]\n", ""))
    assert main(["run", str(config), "--set", f"artifact_root={tmp_path / 'runs'}"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [
        "error: data.mean: 2 values for 3 channels (data.channels); give one value for all channels, or one per "
        "channel",
        "error: finetune.epochs: Input should be greater than or equal to 0",
        "error: model.variant: unknown variant 'huge' of family 'resnet'; available: tiny, small, resnet18, "
        "resnet34, resnet50",
        f"error: data.source.path: folder '{tmp_path / 'no-such-images'}' does not exist",  # from the file's folder
        "error: finetune.loss.gama: unknown field",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml"]


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
def test_one_class_after_acquire_names_data_source_and_the_run_says_how_to_resume(prefect_api, tmp_path):
    """Found once the store exists (the data must be read first), before anything trains: one line
    naming data.source with the fix, exit 2, the stage table so far, the run id and the resume command;
    none of Prefect's log on the terminal."""
    import io

    import numpy as np
    from PIL import Image

    for i in range(12):
        (tmp_path / "imgs" / "only").mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8), i * 20, np.uint8)).save(buf, format="PNG")
        (tmp_path / "imgs" / "only" / f"{i}.png").write_bytes(buf.getvalue())
    overrides = [
        f"artifact_root={tmp_path / 'runs'}",
        f"data.cache_dir={tmp_path / 'ds'}",
        f"data.source={{kind: folder, path: {tmp_path / 'imgs'}}}",
        "finetune.classes=null",
        "pretrain.classes=null",  # the demo pretrains (supervised) on the same data
    ]
    proc = graft("run", str(DIGITS), *[a for o in overrides for a in ("--set", o)])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    # The quiet console keeps what the data stages noticed: here, the new store and its one class.
    notices = [line for line in lines if " | graft.data - " in line]
    assert len(notices) == 1 and notices[0].endswith("12 images, 1 classes"), lines
    assert [line for line in lines if line not in notices] == [
        "acquire · Fetch the data source and normalise it into the content-addressed Arrow store.",
        "✗ acquire failed in " + proc.stderr.split("✗ acquire failed in ")[1].split(" s")[0] + " s",
        "error: data.source: the data has 1 class ('only', 12 images); finetune and pretrain need at least 2: "
        "class-per-folder "
        "data keeps each class in its own sub-folder (<path>/cat/..., <path>/dog/...); if they sit deeper, set "
        "data.source.layout: {kind: folders, root: FOLDER} to the folder that holds them",
    ]
    run_dir = run_dirs(tmp_path / "runs" / "digits-transfer")[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["stages"]) == ["acquire"] and summary["stages"]["acquire"]["status"] == "failed"
    out = proc.stdout
    assert f"run {run_dir.name}" in out and "acquire" in out and "failed" in out  # the table so far
    resume = out.strip().splitlines()[-1].strip()
    assert shlex.split(resume) == [
        "graft",
        "run",
        str(DIGITS),
        *[a for o in overrides for a in ("--set", o)],
        "--run-id",
        run_dir.name,
    ]
    assert not (run_dir / "acquire").exists() and not list(run_dir.glob(".acquire*"))


def test_class_names_are_checked_against_the_store_as_soon_as_it_exists(tmp_path):
    """At the end of acquire, before pretraining: every unknown class, of both tasks, at once."""
    from graftflow.core.config import load_config
    from graftflow.core.errors import DataError
    from graftflow.core.plugin_manager import PluginHost
    from graftflow.core.runs import Run
    from graftflow.core.stages.base import execute_stage

    config = load_config(
        DIGITS,
        [
            f"artifact_root={tmp_path / 'runs'}",
            f"data.cache_dir={tmp_path / 'ds'}",
            "finetune.classes=[5, 6, cow]",
            "pretrain.classes=[0, dog, cat]",
        ],
    )
    run = Run.open(config)
    with pytest.raises(DataError) as err:
        execute_stage("acquire", config, run, PluginHost())
    assert str(err.value).splitlines() == [
        "finetune.classes: class 'cow' is not in the data; classes are 0, 1, 2, 3, 4, 5, 6, 7, 8, 9",
        "pretrain.classes: classes 'dog', 'cat' are not in the data; classes are 0, 1, 2, 3, 4, 5, 6, 7, 8, 9",
    ]
    assert list(run.summary()["stages"]) == ["acquire"]  # nothing trained
    assert len(list((tmp_path / "ds").iterdir())) == 1  # the store is whole and kept: the fixed config reuses it
