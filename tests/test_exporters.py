"""Exporters round-trip resnet tiny and vit micro: the artifact must reproduce eager logits."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from graftflow.core import Exporter
from graftflow.plugins.exporters import graft_exporters
from graftflow.plugins.models import resnet, vit

EXPORTERS = {e.name: e for e in graft_exporters()}
TOL = 1e-4  # what the core allows between verify() and eager
IMAGE = 16
MODELS = {
    # resnet exports with a batch of one: the ONNX batch dimension must still be dynamic.
    "resnet-tiny": (resnet.build, "tiny", 1),
    "vit-micro": (vit.build, "micro", 2),
}


def rebuilder(name: str):
    build, variant, _ = MODELS[name]
    return lambda: build(variant, num_classes=5, in_chans=3, image_size=IMAGE)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


_EXPORTS: dict[tuple[str, str], SimpleNamespace] = {}


def export_once(model_name: str, exporter_name: str, tmp_path_factory) -> SimpleNamespace:
    """One export per (model, format), shared by the tests below: an ONNX export takes seconds."""
    key = (model_name, exporter_name)
    if key not in _EXPORTS:
        torch.manual_seed(0)
        rebuild = rebuilder(model_name)
        model = rebuild().train()  # export must switch to eval itself, and switch back
        example = torch.randn(MODELS[model_name][2], 3, IMAGE, IMAGE)
        dest = tmp_path_factory.mktemp(f"{model_name}-{exporter_name}")
        files = EXPORTERS[exporter_name].export(model, example, dest)
        _EXPORTS[key] = SimpleNamespace(
            exporter=EXPORTERS[exporter_name],
            files=files,
            example=example,
            rebuild=rebuild,
            dest=dest,
            left_training=model.training,
            model=model.eval(),
        )
    return _EXPORTS[key]


@pytest.fixture(params=[(m, e) for m in MODELS for e in EXPORTERS], ids=lambda p: f"{p[0]}-{p[1]}")
def exported(request, tmp_path_factory):
    return export_once(*request.param, tmp_path_factory)


def test_three_exporters_registered():
    assert list(EXPORTERS) == ["torchscript", "onnx", "safetensors"]
    assert all(isinstance(e, Exporter) for e in EXPORTERS.values())


def test_export_writes_files_under_dest_and_keeps_train_mode(exported):
    assert exported.files and all(f.exists() and f.parent == exported.dest for f in exported.files)
    assert exported.left_training


def test_verify_matches_eager(exported):
    out = exported.exporter.verify(exported.files, exported.example, exported.rebuild)
    with torch.no_grad():
        expected = exported.model(exported.example)
    assert isinstance(out, torch.Tensor) and out.shape == expected.shape
    assert max_diff(out, expected) <= TOL


def test_other_batch_size(exported):
    images = torch.randn(5, 3, IMAGE, IMAGE)
    out = exported.exporter.verify(exported.files, images, exported.rebuild)
    with torch.no_grad():
        assert max_diff(out, exported.model(images)) <= TOL


def test_altered_weights_are_detected(exported):
    """The artifact is a snapshot: a model changed after export no longer matches it."""
    changed = copy.deepcopy(exported.model)
    with torch.no_grad():
        changed.get_classifier().bias.add_(0.5)
        expected = changed(exported.example)
    out = exported.exporter.verify(exported.files, exported.example, exported.rebuild)
    assert max_diff(out, expected) > TOL


def test_onnx_names_and_dynamic_batch(tmp_path_factory):
    import onnxruntime

    files = export_once("resnet-tiny", "onnx", tmp_path_factory).files  # exported from a batch of one
    assert files[0].name == "model.onnx"
    session = onnxruntime.InferenceSession(str(files[0]), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("images", "logits")
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, IMAGE, IMAGE]


def test_safetensors_rejects_another_architecture(tmp_path):
    files = EXPORTERS["safetensors"].export(rebuilder("resnet-tiny")(), torch.randn(1, 3, IMAGE, IMAGE), tmp_path)
    example = torch.randn(1, 3, IMAGE, IMAGE)
    with pytest.raises(RuntimeError, match="state_dict"):
        EXPORTERS["safetensors"].verify(
            files, example, lambda: resnet.build("small", num_classes=5, in_chans=3, image_size=IMAGE)
        )


class Tied(nn.Module):
    """Encoder and decoder share one weight, as tied embeddings do."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 4, bias=False)
        self.dec = nn.Linear(4, 4, bias=False)
        self.dec.weight = self.enc.weight

    def forward(self, x):
        return self.dec(self.enc(x))


def test_safetensors_handles_shared_tensors(tmp_path):
    model, example = Tied().eval(), torch.randn(2, 4)
    files = EXPORTERS["safetensors"].export(model, example, tmp_path)
    out = EXPORTERS["safetensors"].verify(files, example, Tied)  # strict load: both keys present
    assert max_diff(out, model(example)) <= TOL
