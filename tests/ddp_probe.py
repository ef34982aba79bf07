"""A test plugin, loaded in every rank of a distributed stage (named in the config's `plugins:`).

It changes nothing in training; it records, per process, into `$GRAFT_DDP_PROBE/<stage>-<rank>.json`:

- `weights`: a digest of the model's whole state (parameters and buffers) at every training forward —
  the weights after the previous optimizer step — and a digest of the batch it was given
  (model family `probe-resnet`: the built-in resnet family with a forward pre-hook);
- `losses`: every training step's loss (loss `probe-ce`: cross-entropy);
- `writes`: every path the process opened for writing, created, renamed or removed (a Python audit hook).

Outside a rank (no `RANK` in the environment, e.g. the test process itself) it records nothing.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import os
import sys
import threading

import torch
from torch import nn

from graftflow.core import LossSpec, hookimpl
from graftflow.plugins.models import resnet

OUT = os.environ.get("GRAFT_DDP_PROBE")
ACTIVE = OUT is not None and "RANK" in os.environ
RECORD = {"weights": [], "losses": [], "writes": []}
_quiet = threading.local()  # set while the probe writes its own record


def _digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _before_forward(module: nn.Module, args) -> None:
    if ACTIVE and module.training:
        RECORD["weights"].append(
            {"state": _digest(module.state_dict().values()), "batch": _digest([args[0]]), "size": len(args[0])}
        )


def _build(variant, **kwargs):
    model = FAMILY.build(variant, **kwargs)
    model.register_forward_pre_hook(_before_forward)
    return model


class ProbeCrossEntropy(nn.Module):
    def forward(self, logits, target):
        loss = nn.functional.cross_entropy(logits, target)
        if ACTIVE and torch.is_grad_enabled():  # a training step, not validation
            RECORD["losses"].append(float(loss))
        return loss


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args) -> None:
    if getattr(_quiet, "on", False):
        return
    path = None
    if event == "open":
        target, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            mode is None and isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        path = target if writes else None
    elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "shutil.move", "os.symlink"):
        path = args[1] if event in ("os.rename", "shutil.move", "os.symlink") else args[0]
    if isinstance(path, (str, bytes, os.PathLike)):
        RECORD["writes"].append([event, os.fsdecode(os.path.abspath(path))])


def _flush() -> None:
    _quiet.on = True
    stage = sys.argv[1] if len(sys.argv) > 1 else "unknown"  # `-m graftflow.core.distributed_worker STAGE ...`
    with open(os.path.join(OUT, f"{stage}-{os.environ['RANK']}.json"), "w") as f:
        json.dump(RECORD, f)


if ACTIVE:
    sys.addaudithook(_audit)
    atexit.register(_flush)

FAMILY = resnet.graft_model_families()[0]


@hookimpl
def graft_model_families():
    return [dataclasses.replace(FAMILY, name="probe-resnet", build=_build)]


@hookimpl
def graft_losses():
    return [LossSpec(name="probe-ce", kind="classification", factory=ProbeCrossEntropy)]
