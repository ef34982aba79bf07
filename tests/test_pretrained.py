"""Issue 14: ImageNet-style pretrained weights in, offline, through timm's own loader.

The weights are a 1,000-class timm resnet18 saved by the test (never downloaded): once as a
local safetensors file, once laid out as a Hugging Face cache (FACTS.md) read with
`HF_HUB_OFFLINE=1`. Both fine-tune on the 1-channel digits through `graft run`, head-only with
the body frozen (`bn: freeze`), so the saved model must hold exactly the file's body, the RGB
stem summed to one channel (timm's adapt_input_conv) and a new 5-class head.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from graftflow.core import ConfigError
from graftflow.core.config import load_config
from graftflow.core.models.build import build_model
from graftflow.core.models.pretrained import load_report, with_pretrained
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.pretrained_weights import auto_inputs, resolve_pretrained
from graftflow.core.runs import Run
from graftflow.core.specs import PretextContext
from graftflow.core.stages.base import execute_stage
from graftflow.core.validation import validate_config
from graftflow.pipelines.cli import main as graft_main
from tests.support import DIGITS, graft, run_dirs

REVISION = "0123456789abcdef0123456789abcdef01234567"
HEAD_ONLY = [  # one head-only epoch on 20 images per class, body and BatchNorm frozen: the body stays the file's
    "data.image_size=8",
    "data.channels=1",
    "pretrain.enabled=false",
    "augment.train=[]",
    "augment.preview=0",
    "finetune.labels_per_class=20",
    "finetune.freeze_epochs=1",
    "finetune.epochs=0",
    "finetune.bn=freeze",
    "finetune.lr=0.01",
]
ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A 1,000-class resnet18 as a safetensors file, and the same file in a Hugging Face cache."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=1000)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    file = root / "resnet18-imagenet.safetensors"
    save_file(state, str(file))
    repo = root / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    (snapshot / "model.safetensors").write_bytes(file.read_bytes())
    cfg = timm.models.get_pretrained_cfg("resnet18.a1_in1k").to_dict()
    config = {"architecture": "resnet18", "num_classes": 1000, "pretrained_cfg": {**cfg, "mean": [0.4, 0.5, 0.6]}}
    (snapshot / "config.json").write_text(json.dumps(config))
    return {"file": file, "hf_home": root / "hf", "state": load_file(str(file)), "root": root}


def graft_run(tmp_path, weights, *sets, env=None):
    overrides = [
        f"artifact_root={tmp_path / 'runs'}",
        f"data.cache_dir={weights['root'] / 'datasets'}",  # one digits store for the module
        *HEAD_ONLY,
        *sets,
    ]
    args = [a for s in overrides for a in ("--set", s)]
    return graft("run", str(DIGITS), *args, "--stages", "acquire,finetune", env={**ENV, **(env or {})})


def assert_grafted(run: Path, state: dict[str, torch.Tensor]) -> dict:
    """The saved model: the file's body, its stem summed to 1 channel, a new 5-class head. Returns the summary."""
    saved = load_file(str(run / "finetune" / "model" / "model.safetensors"))
    assert torch.equal(saved["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))  # adapt_input_conv
    body = [k for k in state if not k.startswith("fc.") and k != "conv1.weight"]
    assert len(body) > 100 and all(torch.equal(saved[k], state[k]) for k in body), "the body changed"
    assert saved["fc.weight"].shape == (5, 512) and state["fc.weight"].shape == (1000, 512)
    summary = json.loads((run / "summary.json").read_text())
    report = summary["finetune"]["weights_load"]
    assert report["stem_adapted"] == {"key": "conv1.weight", "from_channels": 3, "to_channels": 1}
    assert report["missing"] == ["fc.bias", "fc.weight"] and report["unexpected"] == []
    assert report["dropped_head"] == ["fc.bias", "fc.weight"] and report["loaded"] == len(body) + 1
    return summary


@pytest.mark.slow
def test_a_local_safetensors_file_finetunes_a_timm_family_model(prefect_api, tmp_path, weights):
    proc = graft_run(
        tmp_path, weights, "model.family=timm", "model.variant=resnet18", f"model.pretrained={weights['file']}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = assert_grafted(run_dirs(tmp_path / "runs" / "digits-transfer")[0], weights["state"])
    report = summary["finetune"]["weights_load"]
    assert report["kind"] == "file" and report["file"] == str(weights["file"])
    assert summary["finetune"]["inputs"]["mean"] == [0.5]  # explicit values keep working


@pytest.mark.slow
def test_the_hugging_face_cache_offline_with_auto_normalisation(prefect_api, tmp_path, weights):
    env = {"HF_HOME": str(weights["hf_home"]), "HF_HUB_OFFLINE": "1"}
    sets = ["model.family=resnet", "model.variant=resnet18", "model.pretrained=true", "data.mean=auto", "data.std=auto"]
    proc = graft_run(tmp_path, weights, *sets, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = run_dirs(tmp_path / "runs" / "digits-transfer")[0]
    summary = assert_grafted(run, weights["state"])
    report = summary["finetune"]["weights_load"]
    assert report["weights"] == "resnet18.a1_in1k" and report["kind"] == "timm"
    assert report["file"].startswith(str(weights["hf_home"])) and REVISION in report["file"]
    # auto: the weights' ImageNet statistics, averaged over RGB for the 1-channel stem, recorded and used
    used = summary["finetune"]["inputs"]
    assert used["mean"] == [pytest.approx((0.485 + 0.456 + 0.406) / 3, abs=1e-6)]
    assert used["std"] == [pytest.approx((0.229 + 0.224 + 0.225) / 3, abs=1e-6)]
    assert summary["config"]["data"]["mean"] == "auto"
    assert json.loads((run / "finetune" / "model" / "model.json").read_text())["mean"] == used["mean"]


def test_no_cache_and_no_network_is_one_line_in_seconds(tmp_path, monkeypatch, capsys):
    """This machine has no network: the reachability check answers at once instead of a minute of retries."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    code = graft_main(
        ["run", str(DIGITS), "--set", "model.variant=resnet18", "--set", "model.pretrained=true",
         "--set", f"artifact_root={tmp_path / 'runs'}"]
    )  # fmt: skip
    assert code == 2 and time.perf_counter() - start < 10  # graft run, in process: the CLI's own code path
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: model.pretrained: pretrained weights 'resnet18.a1_in1k'")
    assert "not in the Hugging Face cache" in lines[0] and "local file" in lines[0] and "HF_HOME" in lines[0]
    assert not (tmp_path / "runs").exists()  # nothing written before the error
    config = load_config(DIGITS, ["model.variant=resnet18", "model.pretrained=true"])
    host = PluginHost()
    for offline in ("1", ""):
        monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        start = time.perf_counter()
        with pytest.raises(ConfigError, match="not in the Hugging Face cache") as err:
            validate_config(config, host)
        assert time.perf_counter() - start < 10
        assert ("HF_HUB_OFFLINE is set" in str(err.value)) == (offline == "1")


def test_variants_without_weights_and_unknown_weights_are_one_line(weights, tmp_path, monkeypatch):
    host = PluginHost()
    resnet, timm_family = host.families.get("resnet"), host.families.get("timm")
    cases = [
        (resnet, "tiny", True, "model.pretrained: resnet 'tiny' has no pretrained weights; variants that do: resnet18"),
        (resnet, "resnet18", "resnet18.nope", "model.pretrained: timm has no pretrained weights 'resnet18.nope'"),
        (resnet, "resnet18", "resnet50.a1_in1k", "model.pretrained: 'resnet50.a1_in1k' are weights of 'resnet50'"),
        (resnet, "resnet18", str(tmp_path / "none.safetensors"), "model.pretrained: weights file"),
        (resnet, "resnet18", "weights.txt", "model.pretrained: 'weights.txt' is neither weights timm knows"),
        (resnet, "resnet18", str(tmp_path / "w.txt"), "model.pretrained: '"),
    ]
    for family, variant, value, message in cases:
        with pytest.raises(ConfigError) as err:
            resolve_pretrained(family, variant, value, fetch=False)
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    monkeypatch.setenv("HF_HOME", str(weights["hf_home"]))
    with pytest.raises(ConfigError, match="holds weights of 'resnet18', but the model is 'convnext_atto'"):
        resolve_pretrained(timm_family, "convnext_atto", "hf-hub:timm/resnet18.a1_in1k", fetch=False)
    hub = resolve_pretrained(timm_family, "resnet18", "hf-hub:timm/resnet18.a1_in1k")
    assert hub.cfg["mean"] == [0.4, 0.5, 0.6] and hub.file.endswith("model.safetensors")  # the repo's config.json
    both = load_config(DIGITS, ["model.variant=resnet18", f"model.pretrained={weights['file']}", "model.weights=x.pt"])
    with pytest.raises(ConfigError, match="^model.pretrained: model.weights is set too"):
        validate_config(both, host)
    auto = load_config(DIGITS, ["data.std=auto"])
    with pytest.raises(ConfigError, match="^data.std: auto takes the value from the pretrained weights"):
        validate_config(auto, host)
    assert auto_inputs(both, resnet) is both  # nothing auto: the config passes through unchanged


def test_a_pth_state_dict_and_a_vit_resized_to_the_image_size(tmp_path):
    """`.pth` goes through torch.load(weights_only=True); a ViT's position embedding is resized by timm's filter."""
    torch.manual_seed(0)
    source = timm.create_model("vit_tiny_patch16_224", num_classes=1000)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    host = PluginHost()
    weights = resolve_pretrained(host.families.get("vit"), "vit_tiny_patch16_224", str(path))
    meta = {"family": "vit", "variant": "vit_tiny_patch16_224", "num_classes": 3, "in_chans": 3, "image_size": 32}
    model = build_model(host, meta, pretrained=weights)
    report = load_report(model, weights)
    assert report["resized"] == ["pos_embed"] and report["stem_adapted"] is None
    assert model.pos_embed.shape == (1, 1 + 4, 192)  # a 2×2 grid of 16-px patches plus the class token
    state = source.state_dict()
    assert all(
        torch.equal(v, state[k]) for k, v in model.state_dict().items() if k not in ("pos_embed", *report["missing"])
    )
    assert report["missing"] == ["head.bias", "head.weight"]
    torch.save({"model": object()}, tmp_path / "pickled.pth")  # arbitrary pickles are refused
    pickled = resolve_pretrained(host.families.get("vit"), "vit_tiny_patch16_224", str(tmp_path / "pickled.pth"))
    with pytest.raises(Exception, match="not a plain state_dict"):
        build_model(host, meta, pretrained=pickled)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_self_supervised_pretraining_starts_from_the_weights(tmp_path, weights, one_thread):
    """Continue SSL on your own images from ImageNet weights: SimCLR's backbone is built from the file."""
    config = load_config(
        DIGITS,
        [
            f"artifact_root={tmp_path / 'runs'}",
            f"data.cache_dir={weights['root'] / 'datasets'}",
            *HEAD_ONLY,
            "model.variant=resnet18",
            f"model.pretrained={weights['file']}",
            "pretrain.enabled=true",
            "pretrain.pretext=simclr",
            "pretrain.loss=null",
            "pretrain.epochs=1",
            "pretrain.classes=[0]",
            "pretrain.batch_size=64",
        ],
    )
    host = PluginHost()
    validate_config(config, host, ["acquire", "pretrain"])
    run = Run.open(config)
    for stage in ("acquire", "pretrain"):
        execute_stage(stage, config, run, host)
    report = run.summary()["pretrain"]["load"]  # taken before the first step
    assert report["kind"] == "file" and report["stem_adapted"]["to_channels"] == 1 and report["unexpected"] == []
    assert report["loaded"] == len(weights["state"]) - 2 and report["missing"] == []  # SimCLR's backbone has no fc
    trained = load_file(str(Path(run.url) / "pretrain" / "backbone" / "model.safetensors"))
    assert trained["conv1.weight"].shape[1] == 1
    assert not torch.equal(trained["layer4.1.conv2.weight"], weights["state"]["layer4.1.conv2.weight"])  # it learned
    family = host.families.get("resnet")
    built = with_pretrained(family, resolve_pretrained(family, "resnet18", str(weights["file"])))
    module = host.pretexts.get("simclr").build(
        PretextContext(built, "resnet18", {}, in_chans=1, image_size=8, num_classes=0, make_loss=lambda: None)
    )
    assert torch.equal(module.backbone.state_dict()["layer4.1.conv2.weight"], weights["state"]["layer4.1.conv2.weight"])
