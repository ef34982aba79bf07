import pytest

from graftflow.core.config import apply_override, load_config, parse_config
from graftflow.core.errors import ConfigError
from graftflow.core.stage_table import CHAIN, parse_stages
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
