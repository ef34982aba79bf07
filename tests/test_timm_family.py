"""Issue 14: the `timm` family (any architecture by name), `graft models`, and the config fields it adds."""

from __future__ import annotations

import json

import pytest
import torch

from graftflow.core import ConfigError
from graftflow.core.config import load_config, parse_config
from graftflow.core.inference.tta import view
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.specs import PretextContext
from graftflow.core.validation import validate_config
from graftflow.pipelines.cli import main as graft_main
from tests.support import DIGITS


@pytest.fixture(scope="module")
def host():
    return PluginHost()


def test_any_timm_architecture_is_a_variant(host):
    family = host.families.get("timm")
    assert "convnext_atto" in family.variants and "efficientnet_b0" in family.variants
    assert "convnext_atto.d2_in1k" not in family.variants and "nope" not in family.variants
    assert len(family.variants) > 1000
    model = family.build("convnext_atto", num_classes=4, in_chans=1, image_size=32)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 4)
    groups = family.layer_groups(model)
    assert [g.name for g in groups] == ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head.norm", "head"]
    assert family.variant_capabilities("convnext_atto") == {"channels_last"}
    assert family.variant_capabilities("vit_tiny_patch16_224") == {"masked-image-modeling"}
    vit = family.build("vit_tiny_patch16_224", num_classes=3, in_chans=3, image_size=32)  # fixed-size: built for 32 px
    assert vit(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_simmim_masks_tokens_of_a_timm_vit_and_pixels_of_a_timm_cnn(host):
    """Capabilities are read per architecture, so SimMIM picks its masking from the variant."""
    simmim = host.pretexts.get("simmim")
    family = host.families.get("timm")
    for variant, tokens in (("vit_tiny_patch16_224", True), ("convnext_atto", False)):
        ctx = PretextContext(family, variant, {}, in_chans=1, image_size=32, num_classes=0, make_loss=None)
        module = simmim.build(ctx, mask_ratio=0.5, mask_patch=None if tokens else 8)
        assert module.tokens is tokens
        loss = module.step(torch.randn(2, 1, 32, 32), torch.zeros(2, dtype=torch.long))
        assert torch.isfinite(loss)


def test_unknown_architectures_get_close_matches_not_a_thousand_names(host):
    cases = [
        ("convnext_tny", "close: convnext_tiny"),
        (
            "convnext_atto.d2_in1k",
            "the variant is the architecture ('convnext_atto'): name the weights in model.pretrained",
        ),
    ]
    for variant, hint in cases:
        config = load_config(DIGITS, ["model.family=timm", f"model.variant={variant}"])
        with pytest.raises(ConfigError) as err:
            validate_config(config, host)
        line = str(err.value).splitlines()[0]
        assert line.startswith(f"model.variant: unknown variant '{variant}' of family 'timm'") and hint in line
        assert len(line) < 300


def test_graft_models_lists_names_and_cached_weights(tmp_path, monkeypatch, capsys):
    assert graft_main(["models", "convnext_at*"]) == 0
    assert capsys.readouterr().out.split() == ["convnext_atto", "convnext_atto_ols", "convnext_atto_rms"]
    repo = tmp_path / "hub" / "models--timm--convnext_atto.d2_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    (repo / "snapshots" / ("a" * 40)).mkdir(parents=True)
    (repo / "snapshots" / ("a" * 40) / "model.safetensors").write_bytes(b"x")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert graft_main(["models", "convnext_atto*", "--pretrained", "--json"]) == 0
    rows = {r["name"]: r["cached"] for r in json.loads(capsys.readouterr().out)}
    assert rows["convnext_atto.d2_in1k"] is True and rows["convnext_atto_ols.a2_in1k"] is False
    assert graft_main(["models", "no_such_net*"]) == 0
    assert "no timm architecture matches" in capsys.readouterr().err


def test_config_fields_of_pretrained_weights_tta_and_predict(host):
    config = parse_config(
        {"data": {"mean": "auto", "std": "auto", "image_size": "auto"}, "model": {"pretrained": True}}
    )
    assert config.data.mean == "auto" and config.model.pretrained is True
    assert parse_config({"model": {"pretrained": "resnet50.a1_in1k"}}).model.pretrained == "resnet50.a1_in1k"
    views = parse_config({"evaluate": {"tta_views": "original,hflip+zoom:0.75"}}).evaluate.tta_views
    assert views == ["original", "hflip+zoom:0.75"]
    for bad, message in (("spin", "TTA view 'spin'"), ("zoom:1.5", "zoom takes a fraction in (0, 1]")):
        with pytest.raises(ConfigError, match=r"^evaluate\.tta_views: ") as err:
            parse_config({"evaluate": {"tta_views": [bad]}})
        assert message in str(err.value)
    empty = load_config(DIGITS, ["predict.inputs=[]", "predict.out=scores.xlsx", "predict.model=models:/cnx@champion"])
    with pytest.raises(ConfigError) as err:
        validate_config(empty, host, ["predict"])
    assert str(err.value).splitlines() == [
        "predict.model: 'models:/cnx@champion': no model store serves 'models:' (model stores: none loaded); "
        "load the plugin that serves it (plugins: in the config, --plugin, or $GRAFT_PLUGINS)",
        "predict.inputs: name the images to score (files, folders, globs, URLs, archives) or set predict.split",
        "predict.out: 'scores.xlsx' must end in .csv or .parquet",
    ]


def test_tta_views_are_fixed_transformations():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    assert torch.equal(view(images, "original"), images)
    assert torch.equal(view(images, "hflip"), images.flip(-1))
    assert torch.equal(view(images, "vflip+hflip"), images.flip(-2).flip(-1))
    zoomed = view(images, "zoom:0.5")  # the centre 2×2, resized back to 4×4
    assert zoomed.shape == images.shape and torch.equal(view(images, "zoom:0.5"), zoomed)
    assert zoomed[0, 0].min() >= images[0, 0, 1:3, 1:3].min() and zoomed[0, 0].max() <= images[0, 0, 1:3, 1:3].max()
