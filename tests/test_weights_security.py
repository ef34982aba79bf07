"""Weights load only through safetensors or torch.load(weights_only=True): pickled code is refused."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from graftflow.core.errors import GraftError
from graftflow.core.models.weights import read_weights


class Payload:
    def __reduce__(self):  # what a hostile checkpoint does: run code when unpickled
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickled_objects_are_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "model.pt"
    with open(evil, "wb") as f:
        pickle.dump({"weight": Payload()}, f)
    with pytest.raises(
        GraftError, match=r"model.weights: '.*model.pt' is not a plain state_dict \(refusing to unpickle code\)"
    ):
        read_weights(str(evil))
    assert not (tmp_path / "PWNED").exists()


def test_a_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "full_model.pth"
    torch.save(torch.nn.Linear(2, 2), path)  # pickles the class, not just tensors
    with pytest.raises(GraftError, match="refusing to unpickle code"):
        read_weights(str(path))


def test_plain_state_dicts_and_safetensors_load(tmp_path):
    state = torch.nn.Linear(2, 3).state_dict()
    torch.save(state, tmp_path / "ok.pt")
    save_file(state, str(tmp_path / "ok.safetensors"))
    for name in ("ok.pt", "ok.safetensors"):
        loaded = read_weights(str(tmp_path / name))
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    with pytest.raises(GraftError, match="unsupported weights format '.pkl'"):
        (tmp_path / "x.pkl").write_bytes(b"...")
        read_weights(str(tmp_path / "x.pkl"))
