"""`model.pretrained` seeds the segmentation encoder: a local timm weight file and a Hugging Face cache (offline).

The weights are a 1,000-class timm resnet18 the test saves (never downloaded), the
cache laid out as FACTS.md describes. The U-Net's encoder (`encoder.model.*`, timm's
own keys) must then hold exactly the file's tensors, the RGB stem summed to the
one channel the data has; the decoder and head stay freshly initialised.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from graftflow.core.config import PipelineConfig
from graftflow.core.models.build import build_model, model_meta
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.pretrained_weights import resolve_pretrained

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """resnet18's state as a safetensors file, and the same file in a Hugging Face cache."""
    root = tmp_path_factory.mktemp("seg-weights")
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in timm.create_model("resnet18", num_classes=1000).state_dict().items()}
    file = root / "resnet18.safetensors"
    save_file(state, str(file))
    snapshot = root / "hf" / "hub" / "models--timm--resnet18.a1_in1k" / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text(REVISION)
    (snapshot / "model.safetensors").write_bytes(file.read_bytes())
    config = {"architecture": "resnet18", "num_classes": 1000, "pretrained_cfg": timm.models.get_pretrained_cfg(
        "resnet18.a1_in1k").to_dict()}  # fmt: skip
    (snapshot / "config.json").write_text(json.dumps(config))
    return {"file": str(file), "hf_home": root / "hf", "state": state}


def _unet(pretrained):
    host = PluginHost()
    config = PipelineConfig.model_validate(
        {
            "task": {"name": "segmentation", "encoder_depth": 3, "decoder_channels": [32, 16, 16]},
            "model": {"family": "timm", "variant": "resnet18"},
            "data": {"channels": 1, "image_size": 32},
        }
    )
    meta = model_meta(config, ["1", "2"])
    weights = resolve_pretrained(host.families.get("timm"), "resnet18", pretrained)
    return build_model(host, meta, pretrained=weights)


def _assert_encoder_holds(model, state):
    encoder = model.encoder.model.state_dict()
    assert torch.allclose(encoder["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))  # RGB stem → grey
    same = [k for k in encoder if k != "conv1.weight"]
    assert len(same) > 50 and all(torch.equal(encoder[k], state[k]) for k in same)  # every other encoder tensor


def test_a_local_weight_file_loads_into_the_unet_encoder(weights):
    torch.manual_seed(1)
    model = _unet(weights["file"])
    _assert_encoder_holds(model, weights["state"])
    torch.manual_seed(1)
    fresh = _unet(None)  # the same seed without weights: the encoder differs, so the file is what set it
    assert not torch.equal(fresh.encoder.model.layer1[0].conv1.weight, model.encoder.model.layer1[0].conv1.weight)
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)


def test_the_hugging_face_cache_offline_loads_into_the_encoder(weights, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(weights["hf_home"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_encoder_holds(_unet("resnet18.a1_in1k"), weights["state"])
