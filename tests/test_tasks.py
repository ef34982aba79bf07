"""Tasks as plugins: the contract, the `task:` config field, mask stores, and the segmentation task's parts."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import yaml

from graftflow.core.config import PipelineConfig
from graftflow.core.data.dataset import normalizer, select
from graftflow.core.data.layouts import records
from graftflow.core.data.masks import MaskDataset, decode_mask, rle_encode
from graftflow.core.data.splits import stratified_split
from graftflow.core.data.store import build_store, read_table
from graftflow.core.errors import ConfigError
from graftflow.core.hookspecs import CONTRACT_VERSION
from graftflow.core.models.build import build_model, check_partition, layer_groups, model_meta
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.validation import validate_config
from tests.severstal_synth import HEIGHT, WIDTH, competition, table_layout, write_files


@pytest.fixture(scope="module")
def host():
    return PluginHost(env={})


def test_built_in_tasks_are_plugins_listed_with_their_parameters(host, capsys):
    from graftflow.pipelines.cli.plugins import main

    assert CONTRACT_VERSION >= (2, 5)
    assert {"classification", "multilabel", "segmentation"} <= set(host.tasks.names())
    main(argparse.Namespace(plugin=None, verbose=True, json=True))
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out) if r["kind"] == "task"}
    assert rows["classification"]["plugin"] == "graftflow.plugins.tasks.classification"
    assert {p["name"] for p in rows["segmentation"]["parameters"]} >= {"decoder", "threshold", "min_area"}
    losses = {n: e.spec.kind for n, e in host.losses.entries()}
    assert {losses[n] for n in ("dice", "bce-dice", "seg-focal", "lovasz")} == {"segmentation"}
    assert {losses[n] for n in ("bce", "focal-bce", "asl")} == {"multilabel"}


def test_classification_is_the_default_and_model_json_says_so(host):
    config = PipelineConfig()
    assert config.task.name == "classification"
    validate_config(config, host)
    meta = model_meta(config, ["a", "b"])
    assert meta["task"] == {"name": "classification"}
    model = build_model(host, meta)
    size = meta["image_size"] if isinstance(meta["image_size"], int) else 32
    assert model(torch.zeros(2, meta["in_chans"], size, size)).shape == (2, 2)


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"task": "segmentaton"}, "task.name: unknown task 'segmentaton'; available: classification, multilabel"),
        (
            {"task": "segmentation", "finetune": {"loss": "cross-entropy"}},
            "finetune.loss.name: 'cross-entropy' is a classification loss; finetune.loss needs a segmentation loss "
            "(bce-dice, dice, lovasz, seg-focal)",
        ),
        (
            {"finetune": {"monitor": "val_dice"}},
            "finetune.monitor: task 'classification' and method 'standard' do not report 'val_dice'; "
            "available: val_loss, val_accuracy",
        ),
        (
            {"task": "segmentation", "finetune": {"monitor": "target_entropy"}},
            "finetune.monitor: task 'segmentation' and method 'standard' do not report 'target_entropy'; "
            "available: val_loss, val_dice",
        ),
        ({"task": {"name": "segmentation", "decodr": "fpn"}}, "task.decodr"),
    ],
)
def test_task_mistakes_are_one_line_before_any_work(host, data, line):
    with pytest.raises(ConfigError) as info:
        validate_config(PipelineConfig.model_validate(data), host)
    assert line in str(info.value)


def test_a_task_mistake_exits_2_from_graft_run(tmp_path, capsys):
    from graftflow.pipelines.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"task": "segmentation", "finetune": {"loss": "focal"}}))
    assert main(["run", str(path), "--set", f"artifact_root={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: finetune.loss.name: 'focal' is a classification loss") and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing written: the check comes before any work


@pytest.fixture(scope="module")
def mask_store(tmp_path_factory):
    """A Severstal-shaped table (RLE in EncodedPixels) read by the table layout into a mask store."""
    root = tmp_path_factory.mktemp("steel")
    files, truth = competition(n=12, test_images=0)
    write_files(root, files)
    import fsspec

    recs = records(fsspec.filesystem("file"), str(root), {"layout": table_layout("mask")}, "test")
    info = build_store(recs, str(root / "store"), {"val": 0.2, "test": 0.2, "seed": 0}, {}, stratified_split)
    return info, truth


def test_masks_from_an_rle_table_are_stored_exactly(mask_store):
    info, truth = mask_store
    assert info.target == "mask" and info.class_names == ["1", "2", "3", "4"] and info.rows == 12
    table = read_table(info.url)
    for source, labels, mask in zip(*(table[c].to_pylist() for c in ("source", "labels", "mask")), strict=True):
        drawn = truth[source.rsplit("/", 1)[1]]
        stored = decode_mask(mask, 4)
        for c in range(4):
            expected = drawn.get(c + 1, np.zeros((HEIGHT, WIDTH), bool))
            assert (stored[c] == expected).all() and rle_encode(stored[c]) == rle_encode(expected)
        assert sorted(labels) == sorted(c - 1 for c, m in drawn.items() if m.any())
    with pytest.raises(Exception, match="holds mask targets .*set task: segmentation"):
        select(info.url, "train", None, "finetune.classes")  # a classifier refuses a mask store


def test_augmentations_move_image_and_mask_together(mask_store):
    from torchvision.transforms import v2

    info, _ = mask_store
    sel = select(info.url, ["train", "val", "test"], None, "x", frozenset({"mask"}))
    plain = MaskDataset(sel, 1, 32)
    flipped = MaskDataset(sel, 1, 32, [v2.RandomHorizontalFlip(1.0), v2.ColorJitter(brightness=(0.5, 0.5))])
    i = next(i for i in range(len(sel)) if plain[i][1].sum() > 0)
    (image, mask), (image2, mask2) = plain[i], flipped[i]
    assert mask.shape == (4, 32, 32) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask2, mask.flip(-1))  # geometry reaches the mask; the colour op does not
    assert not torch.equal(image2, image.flip(-1)) and image2.float().mean() < image.float().mean()
    norm = MaskDataset(sel, 1, 32, (), normalizer([0.5], [0.25], 1))[i][0]
    assert norm.dtype == torch.float32 and torch.allclose(norm, (image.float() / 255 - 0.5) / 0.25, atol=1e-6)


def test_the_mask_cache_gives_the_decoded_masks_and_fills_once(mask_store):
    """cache=True keeps each decoded mask's bits in shared memory: the same masks as decoding them, and a
    second read comes from the cache (the store's column is not read again)."""
    info, _ = mask_store
    sel = select(info.url, ["train", "val", "test"], None, "x", frozenset({"mask"}))
    plain, cached = MaskDataset(sel, 1, 32), MaskDataset(sel, 1, 32, cache=True)
    assert cached.cached_bits is not None and cached.cached_bits.is_shared() and not cached.filled.any()
    for i in range(len(sel)):
        assert torch.equal(cached[i][1], plain[i][1]) and torch.equal(cached[i][0], plain[i][0])
    assert cached.filled.all()
    cached.masks = None  # every mask is cached now: the column is not needed again
    assert all(torch.equal(cached[i][1], plain[i][1]) for i in range(len(sel)))


def test_segmentation_model_groups_and_backbone_hand_off(host):
    config = PipelineConfig.model_validate(
        {
            "task": {"name": "segmentation", "decoder": "fpn"},
            "model": {"family": "timm", "variant": "test_resnet"},
            "data": {"channels": 1},
        }
    )
    meta = model_meta(config, ["1", "2", "3"])
    model = build_model(host, meta)
    groups = layer_groups(host, "timm", model, "segmentation")
    check_partition(model, groups, "timm")
    names = [g.name for g in groups]
    assert names[:2] == ["encoder.act1", "encoder.layer1"] and names[-2:] == ["decoder", "head"]
    assert model(torch.zeros(2, 1, 32, 64)).shape == (2, 3, 32, 64)
    classifier = build_model(host, model_meta(config, ["a", "b"], task=False))  # a pretrain backbone
    key = host.tasks.get("segmentation").backbone_key
    state = {key(k): v for k, v in classifier.state_dict().items() if not k.startswith("fc.")}
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys and all(
        k.startswith(("decoder.", "segmentation_head.")) for k in result.missing_keys
    )


def test_the_readme_severstal_config_is_valid(host):
    """README's "Severstal, end to end" config, as printed, passes every check (weights not fetched here)."""
    import re

    from tests.support import ROOT

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(# steel.yaml\n.*?)```", text[text.index("## Severstal, end to end") :], re.S)
    data = yaml.safe_load(block.group(1))
    assert data["task"]["name"] == "segmentation" and data["data"]["source"]["layout"]["target"] == "mask"
    data["model"].pop("pretrained")  # timm's loader would download the weights
    validate_config(PipelineConfig.model_validate(data), host, stages=["finetune", "evaluate", "export"])


def test_monitors_are_declared_with_their_direction(host):
    """`finetune.monitor` takes its min/max from the declaring spec: the tasks' metrics are maximised, val_loss and
    the adaptation methods' target_entropy minimised; a bare name (contract 2.4) is refused when the spec is made."""
    from dataclasses import replace

    from graftflow.core.specs import Monitor
    from graftflow.core.tasks import resolve_monitor

    classification = host.tasks.get("classification")
    assert resolve_monitor(classification, "val_loss") == Monitor("val_loss", "min")
    for task, metric in (("classification", "val_accuracy"), ("multilabel", "val_map"), ("segmentation", "val_dice")):
        assert resolve_monitor(host.tasks.get(task), metric) == Monitor(metric, "max")
    for method in ("mmd", "dann", "cdan"):
        monitor = resolve_monitor(classification, "target_entropy", host.methods.get(method))
        assert monitor == Monitor("target_entropy", "min")
    with pytest.raises(ConfigError, match="available: val_loss, val_accuracy$"):
        resolve_monitor(classification, "target_entropy", host.methods.get("standard"))
    with pytest.raises(TypeError, match="TaskSpec 'classification': monitors holds 'val_f1'; declare Monitor"):
        replace(classification, monitors=("val_f1",))
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        Monitor("val_f1", "up")
