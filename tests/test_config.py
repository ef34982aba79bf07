import json

import pytest
import yaml

from graftflow.core.config import (
    PipelineConfig,
    PluginRef,
    SourceConfig,
    apply_override,
    apply_overrides,
    head_only_epochs,
    load_config,
    parse_config,
    parse_partial,
)
from graftflow.core.errors import ConfigError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.stage_table import CHAIN, parse_stages
from graftflow.core.validation import _params_lookup, load_checked
from graftflow.pipelines.cli import main
from tests.support import DIGITS


def test_demo_config_loads_with_every_section():
    cfg = load_config(DIGITS)
    assert cfg.model.family == "resnet" and cfg.finetune.lr == [0.0003, 0.003]
    assert cfg.finetune.loss.name == "cross-entropy" and cfg.finetune.loss.params == {"label_smoothing": 0.1}
    assert cfg.pretrain.classes == ["0", "1", "2", "3", "4"]


def test_set_overrides_parse_yaml_values():
    cfg = load_config(
        DIGITS,
        ["finetune.epochs=7", "finetune.lr=[1e-4, 1e-2]", "model.variant=small", "finetune.loss.label_smoothing=0.2"],
    )
    assert cfg.finetune.epochs == 7 and cfg.finetune.lr == [1e-4, 1e-2] and cfg.model.variant == "small"
    assert cfg.finetune.loss.name == "cross-entropy" and cfg.finetune.loss.params == {"label_smoothing": 0.2}


def test_choosing_another_plugin_drops_the_old_ones_params():
    cfg = load_config(DIGITS, ["finetune.loss.name=other", "data.source.kind=folder", "data.source.path=/x"])
    assert cfg.finetune.loss.name == "other" and cfg.finetune.loss.params == {}
    assert cfg.data.source.kind == "folder" and cfg.data.source.params == {"path": "/x"}
    same = load_config(DIGITS, ["finetune.loss.name=cross-entropy"])
    assert same.finetune.loss.params == {"label_smoothing": 0.1}


def test_a_name_that_is_not_a_plugin_reference_is_just_a_value():
    cfg = load_config(DIGITS, ["name=other", "gpu_slot.hold=always", "gpu_slot.name=gpu-big"])
    assert cfg.name == "other" and cfg.finetune.lr == [0.0003, 0.003]  # the rest of the file is kept
    assert (cfg.gpu_slot.name, cfg.gpu_slot.hold) == ("gpu-big", "always")
    pretext = load_config(
        DIGITS, ["pretrain.pretext.name=simclr", "pretrain.source.kind=folder", "pretrain.source.path=/x"]
    )
    assert pretext.pretrain.pretext.name == "simclr" and pretext.pretrain.source.params == {"path": "/x"}


def test_set_on_a_string_loss_turns_it_into_a_mapping():
    data = {"finetune": {"loss": "cross-entropy"}}
    apply_override(data, "finetune.loss.label_smoothing=0.2")
    assert parse_config(data).finetune.loss.params == {"label_smoothing": 0.2}


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"finetune": {"lr": -0.1}}, "finetune.lr: learning rate must be > 0, got -0.1"),
        ({"finetune": {"lr": [0.01, 0.001]}}, "finetune.lr: [lo, hi] needs lo <= hi"),
        ({"finetune": {"epochs": "many"}}, "finetune.epochs: Input should be a valid integer"),
        ({"finetune": {"epoch": 3}}, "finetune.epoch: unknown field"),
        ({"device": "gpu"}, "device: String should match pattern"),
        ({"data": {"split": {"val": 0.5, "test": 0.5}}}, "data.split: val + test must be < 1"),
    ],
)
def test_each_problem_is_one_line_naming_the_field(data, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert str(err.value).startswith(expected)
    assert len(str(err.value).splitlines()) == 1


def test_several_problems_give_one_line_each():
    with pytest.raises(ConfigError) as err:
        parse_config({"finetune": {"lr": 0, "epochs": -1}, "seed": "x"})
    lines = str(err.value).splitlines()
    assert len(lines) == 3 and {line.split(":")[0] for line in lines} == {"finetune.lr", "finetune.epochs", "seed"}


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfinetune:\n  lr: [0.1, 0.2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+: YAML syntax error"):
        load_config(bad)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config file does not exist"):
        load_config("/nonexistent/x.yaml")


def test_stages_parse_in_pipeline_order():
    assert parse_stages("export,acquire") == ["acquire", "export"]
    assert parse_stages(None) == list(CHAIN)
    with pytest.raises(ConfigError, match="unknown stage 'train'"):
        parse_stages("acquire,train")


# --- every problem at once, paths from the config's folder, defaults for your own data -----------


def test_an_invalid_field_falls_back_to_its_default_so_the_rest_is_still_checked():
    config, problems, dropped = parse_partial({"finetune": {"lr": -1, "epochs": 2}, "data": {"channels": 5}})
    assert problems == [
        "data.channels: Input should be 1 or 3",
        "finetune.lr: learning rate must be > 0, got -1",
    ]
    assert sorted(dropped) == ["data.channels", "finetune.lr"]
    assert config.finetune.epochs == 2 and config.finetune.lr == 1e-3  # the rest is kept, the bad one defaulted


def test_a_later_round_reports_a_sibling_but_not_a_sections_check_of_a_stand_in():
    # data.mean can only be checked once channels is valid; 2 values fit neither 1 nor 3 channels
    _, problems, _ = parse_partial({"data": {"channels": "rgb", "mean": [0.5, 0.5]}})
    assert [p.split(":")[0] for p in problems] == ["data.channels", "data.mean"]
    # with val back at its default, "val + test < 1" is about a value the user never wrote: not reported
    _, problems, _ = parse_partial({"data": {"split": {"val": 2, "test": 0.95}}})
    assert problems == ["data.split.val: Input should be less than 1"]


def test_set_values_that_are_broken_yaml_name_the_field():
    with pytest.raises(ConfigError, match=r"^finetune.lr: --set value '\[1e-4,' is not valid YAML"):
        apply_override({}, "finetune.lr=[1e-4,")
    data = {}
    apply_override(data, "name=a:b@c")  # not YAML-looking: a plain string, as before
    assert data == {"name": "a:b@c"}
    assert apply_overrides({}, ["finetune.lr=[1,", "bad", "x.=1"]) == [
        "finetune.lr: --set value '[1,' is not valid YAML: expected the node content, but found '<stream end>'",
        "--set bad: expected FIELD=VALUE, e.g. finetune.epochs=3",
        "--set x.=1: 'x.' is not a field path (a.b.c)",
    ]


def test_mean_and_std_hold_one_value_or_one_per_channel():
    assert parse_config({"data": {"channels": 3, "mean": [0.1, 0.2, 0.3], "std": [0.5]}}).data.mean == [0.1, 0.2, 0.3]
    with pytest.raises(ConfigError, match=r"^data.std: 2 values for 3 channels \(data.channels\)"):
        parse_config({"data": {"channels": 3, "std": [0.5, 0.5]}})


def test_relative_paths_in_a_file_resolve_from_its_folder_and_set_values_from_here(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "c.yaml").write_text(
        "plugins: [my_plugin.py, some.module]\n"
        "data:\n  cache_dir: stores\n  source: {kind: folder, path: imgs/train}\n"
        "model: {weights: w/model.safetensors}\n"
        "pretrain: {source: {kind: folder, path: s3://bucket/unlabelled}}\n"
        "finetune: {loss: {name: distillation, teacher: teacher/model}}\n"
    )
    monkeypatch.chdir(tmp_path)
    host = PluginHost()
    lookup = _params_lookup(host)
    config = load_config(folder / "c.yaml", ["model.weights=here.safetensors"], lookup)
    assert config.plugins == [str(folder / "my_plugin.py"), "some.module"]  # a module name is not a path
    assert config.data.store_root == str(folder / "stores")
    assert config.data.source.params == {"path": str(folder / "imgs" / "train")}
    assert config.pretrain.source.params == {"path": "s3://bucket/unlabelled"}  # URLs are kept
    assert config.model.weights == "here.safetensors"  # typed on the command line: from the current folder
    assert config.finetune.loss.params == {"teacher": "teacher/model"}  # not marked as a path by its plugin
    (folder / "my_plugin.py").write_text("")
    (folder / "imgs" / "train").mkdir(parents=True)
    (folder / "d.yaml").write_text("plugins: [my_plugin.py]\ndata: {source: {kind: folder, path: imgs/train}}\n")
    checked = load_checked(folder / "d.yaml").config  # what graft run checks: the plugins are loaded from there
    assert checked.plugins == [str(folder / "my_plugin.py")]
    assert checked.data.source.params == {"path": str(folder / "imgs" / "train")}
    (tmp_path / "x").mkdir()
    assert load_checked(folder / "d.yaml", ["data.source.path=x"]).config.data.source.params == {"path": "x"}


def test_the_store_defaults_to_the_users_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("GRAFT_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert PipelineConfig().data.store_root == str(tmp_path / "xdg" / "graftflow" / "datasets")
    monkeypatch.setenv("GRAFT_CACHE_DIR", str(tmp_path / "mine"))
    assert PipelineConfig().data.store_root == str(tmp_path / "mine")
    assert parse_config({"data": {"cache_dir": "s3://b/ds"}}).data.store_root == "s3://b/ds"


def test_pretraining_only_when_asked_and_head_only_epochs_only_with_weights_to_protect():
    plain = PipelineConfig()
    assert plain.pretrain.enabled is False and load_config(DIGITS).pretrain.enabled is True  # the demo asks
    assert head_only_epochs(plain, pretrain_completed=False) == 0
    assert head_only_epochs(plain, pretrain_completed=True) == 1
    assert head_only_epochs(parse_config({"model": {"weights": "w.safetensors"}}), False) == 1
    assert head_only_epochs(parse_config({"model": {"pretrained": True}}), False) == 1  # issue 14's field
    assert head_only_epochs(parse_config({"finetune": {"pretrained": False}}), True) == 0
    assert head_only_epochs(parse_config({"finetune": {"freeze_epochs": 3}}), False) == 3  # explicit wins


def test_graft_config_defaults_is_yaml_of_every_field_that_loads_as_the_defaults(capsys):
    assert main(["config", "--defaults"]) == 0
    text = capsys.readouterr().out
    assert parse_config(yaml.safe_load(text)) == PipelineConfig()

    def fields(model, prefix=""):
        for name, info in model.model_fields.items():
            yield prefix + name, info
            sub = getattr(info.annotation, "model_fields", None)
            if sub is not None and not issubclass(info.annotation, (PluginRef, SourceConfig)):
                yield from fields(info.annotation, f"{prefix}{name}.")

    for path, info in fields(PipelineConfig):
        if info.description:  # every description is there, as a comment above its field
            assert info.description.split()[0] in text, path
    assert "#   " not in text and "  # Head-only epochs with the body frozen" in text


def test_graft_config_schema_and_check(capsys, tmp_path):
    assert main(["config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    data = schema["$defs"]["DataConfig"]["properties"]
    assert data["cache_dir"]["format"] == "path" and "description" in data["image_size"]
    assert main(["config", str(DIGITS), "--set", "finetune.epochs=9"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["finetune"]["epochs"] == 9 and shown["data"]["cache_dir"] is None
    assert main(["config", str(DIGITS), "--set", "finetune.epochs=-9"]) == 2
    assert capsys.readouterr().err.startswith("error: finetune.epochs: Input should be greater than or equal to 0")
    assert main(["config"]) == 2
