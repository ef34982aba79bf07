"""The resnet and vit families: shapes, layer groups, heads and config errors."""

from __future__ import annotations

import pytest
import timm
import torch

from graftflow.core import ConfigError, ModelFamily, classifier_param_names, timm_layer_groups
from graftflow.plugins.models import resnet, vit

FAMILIES = {f.name: f for mod in (resnet, vit) for f in mod.graft_model_families()}
SMALL = [("resnet", "tiny"), ("resnet", "small"), ("vit", "micro"), ("vit", "tiny")]


def build(family: str, variant: str, num_classes: int = 5, in_chans: int = 3, image_size: int = 16, **params):
    return FAMILIES[family].build(variant, num_classes=num_classes, in_chans=in_chans, image_size=image_size, **params)


def assert_partition(model, groups) -> None:
    """Every parameter exactly once, in module order (input→head)."""
    flat = [name for g in groups for name in g.params]
    assert flat == [name for name, _ in model.named_parameters()]
    assert len({g.name for g in groups}) == len(groups)
    assert all(g.params for g in groups)


def test_hooks_register_the_families():
    assert set(FAMILIES) == {"resnet", "vit"}
    assert all(isinstance(f, ModelFamily) for f in FAMILIES.values())
    assert FAMILIES["resnet"].capabilities == frozenset({"channels_last"})
    assert FAMILIES["vit"].capabilities == frozenset({"masked-image-modeling"})
    assert {"tiny", "small", "resnet18", "resnet34", "resnet50"} == set(FAMILIES["resnet"].variants)
    assert {"micro", "tiny", "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224"} == set(
        FAMILIES["vit"].variants
    )


@pytest.mark.parametrize("family,variant", SMALL)
@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("image_size", [8, 16, 32])
def test_small_variants_forward(family, variant, in_chans, image_size):
    model = build(family, variant, num_classes=5, in_chans=in_chans, image_size=image_size).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_chans, image_size, image_size))
    assert out.shape == (2, 5)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "family,variant,expected",
    [
        ("resnet", "tiny", ["stem", "layer1", "layer2", "layer3", "layer4", "head"]),
        ("resnet", "small", ["stem", "layer1", "layer2", "layer3", "layer4", "head"]),
        ("vit", "micro", ["embed", "block0", "block1", "block2", "block3", "head"]),
        ("vit", "tiny", ["embed", *(f"block{i}" for i in range(12)), "head"]),
    ],
)
def test_layer_groups(family, variant, expected):
    model = build(family, variant)
    groups = FAMILIES[family].layer_groups(model)
    assert [g.name for g in groups] == expected
    assert_partition(model, groups)
    head = {n for n, p in model.named_parameters() if any(p is q for q in model.get_classifier().parameters())}
    assert set(groups[-1].params) == head and len(head) == 2  # weight and bias of the Linear


@pytest.mark.parametrize("family,variant", SMALL)
def test_reset_head_changes_outputs(family, variant):
    """A new classifier over the same body: the features are untouched, the logits are the new head's."""
    spec = FAMILIES[family]
    model = build(family, variant, num_classes=5).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        features, old = model.forward_head(model.forward_features(x), pre_logits=True), model(x)
    body = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("fc.", "head."))}
    spec.reset_head(model, 7)
    with torch.no_grad():
        new = model(x)
        assert torch.allclose(new, model.get_classifier()(features), atol=1e-5)  # new head on the same features
    assert new.shape == (2, 7) and not torch.allclose(new[:, :5], old, atol=1e-3)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in body.items())
    groups = spec.layer_groups(model)
    assert_partition(model, groups)
    assert groups[-1].name == "head" and groups[-1].params == tuple(classifier_param_names(model))


@pytest.mark.parametrize("family,variant", SMALL)
def test_zero_classes_gives_features(family, variant):
    model = build(family, variant, num_classes=0).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 16, 16))
    assert out.shape == (3, model.num_features)
    groups = FAMILIES[family].layer_groups(model)
    assert "head" not in [g.name for g in groups]
    assert_partition(model, groups)


def test_params_reach_the_model():
    assert build("resnet", "tiny", drop_rate=0.25).drop_rate == 0.25
    assert build("vit", "micro", drop_rate=0.25).head_drop.p == 0.25
    blocks = build("vit", "micro", drop_path_rate=0.3).blocks
    assert blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)


@pytest.mark.parametrize("family,variant", [("resnet", "tiny"), ("vit", "micro")])
@pytest.mark.parametrize(
    "params,field",
    [
        ({"drop_rate": 1.5}, "model.drop_rate"),
        ({"drop_path_rate": -0.1}, "model.drop_path_rate"),
        ({"dropout": 0.1}, "model.dropout: unknown field"),
    ],
)
def test_bad_params_are_config_errors(family, variant, params, field):
    with pytest.raises(ConfigError, match=field):
        build(family, variant, **params)


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_unknown_variant(family):
    with pytest.raises(ConfigError, match=r"^model\.variant: unknown variant 'huge'"):
        build(family, "huge")


@pytest.mark.parametrize(
    "variant,image_size", [("micro", 18), ("micro", 9), ("tiny", 10), ("tiny", 2), ("vit_tiny_patch16_224", 40)]
)
def test_vit_patch_size_must_divide_image(variant, image_size):
    with pytest.raises(ConfigError, match=r"^model\.variant: .*multiple of"):
        build("vit", variant, image_size=image_size)


@pytest.mark.parametrize("family,variant,image_size", [("resnet", "resnet18", 32), ("vit", "vit_tiny_patch16_224", 32)])
def test_standard_variants(family, variant, image_size):
    model = build(family, variant, num_classes=4, in_chans=1, image_size=image_size).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, image_size, image_size)).shape == (1, 4)
    groups = FAMILIES[family].layer_groups(model)
    assert groups[0].name in {"stem", "embed"} and groups[-1].name == "head"
    assert_partition(model, groups)


def test_resnet_runs_channels_last():
    model = build("resnet", "tiny").eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16).to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert model(x).shape == (2, 5)


def test_generic_helper_on_another_timm_model():
    """Any timm model with a group_matcher gets groups; convnext keeps `head.norm` before the head."""
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=3)
    groups = timm_layer_groups(model)
    assert [g.name for g in groups] == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head.norm", "head"]
    assert groups[-1].params == ("head.fc.weight", "head.fc.bias")
    assert_partition(model, groups)
