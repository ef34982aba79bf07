"""Every stage, declared once: what runs it, what it holds, reads and writes.

The Prefect flows (one per stage), `transfer`'s chain, `--stages`, the GPU slot,
DDP, the cross-run cache key and the deployments are all derived from this
table. Adding a stage is one entry here plus one module under `core/stages/`
whose `run(ctx) -> StageResult` does the work; nothing else needs an edit.

The table names each stage's module instead of importing it, so reading the
table (the CLI's `--stages`, `graft plugins`) costs no torch import.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graftflow.core.errors import ConfigError

if TYPE_CHECKING:
    from graftflow.core.config import PipelineConfig

# What every stage reads besides its own sections: a change here changes every stage's result.
COMMON_INPUTS = ("seed", "device", "precision", "compile", "plugins", "distributed", "model")


@dataclass(frozen=True)
class Stage:
    """One stage of a run.

    `chain`: part of the `transfer` flow, which runs the chain in table order.
    `gpu`: holds a slot of the GPU concurrency limit (`gpu_slot`) on a Prefect server.
    `distributed`: with `distributed.nproc_per_node > 1` it runs in that many DDP processes.
    `checkpoints`: resumable mid-stage from `<run>/_checkpoints/<name>/`.
    `outputs`: every name the stage may publish (summary.json `stages.<name>.outputs`).
    `reads`: config sections (dotted) that change what it computes: its cache key.
    `prepare`: stages its flow runs first when the run has not completed them.
    `retry_transient`: Prefect retries it with back-off on a passing failure (`data.retries`).
    `epochs(config)`: training epochs, for progress; None for stages that do not train.
    """

    name: str
    module: str
    description: str
    chain: bool = True
    gpu: bool = False
    distributed: bool = False
    checkpoints: bool = False
    outputs: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    prepare: tuple[str, ...] = ()
    retry_transient: bool = False
    epochs: Callable[[PipelineConfig], int] | None = None

    @property
    def function(self) -> Callable[[Any], Any]:
        """The stage's `run(ctx) -> StageResult`, imported on first use."""
        return importlib.import_module(self.module).run

    @property
    def python_name(self) -> str:
        """The name of its flow function in `graftflow.pipelines.flows` (`lr-find` → `lr_find`)."""
        return self.name.replace("-", "_")


def _pretrain_epochs(config: PipelineConfig) -> int:
    from graftflow.core.config import pretrains

    return config.pretrain.epochs if pretrains(config) else 0


def _finetune_epochs(config: PipelineConfig) -> int:
    from graftflow.core.config import head_only_epochs

    return head_only_epochs(config, config.pretrain.enabled) + config.finetune.epochs


STAGES: tuple[Stage, ...] = (
    Stage(
        "acquire",
        "graftflow.core.stages.acquire",
        "Fetch the data source and normalise it into the content-addressed Arrow store.",
        outputs=("dataset", "card", "samples", "pretrain_dataset", "target_dataset"),
        reads=("data", "pretrain.source", "finetune.method"),
        retry_transient=True,
    ),
    Stage(
        "augment",
        "graftflow.core.stages.augment",
        "Validate the augmentation policy, write a preview grid, optionally materialise augmented copies.",
        outputs=("policy", "preview", "dataset"),
        reads=("augment",),
    ),
    Stage(
        "pretrain",
        "graftflow.core.stages.pretrain",
        "Pretrain the backbone with the configured pretext task (supervised or self-supervised).",
        gpu=True,
        distributed=True,
        checkpoints=True,
        outputs=("backbone", "history"),
        reads=("pretrain", "checkpoints"),
        epochs=_pretrain_epochs,
    ),
    Stage(
        "finetune",
        "graftflow.core.stages.finetune",
        "Fine-tune: head first with the body frozen, then all layer groups with their own LRs.",
        gpu=True,
        distributed=True,
        checkpoints=True,
        outputs=("model", "history", "curves"),
        reads=("finetune", "checkpoints"),
        epochs=_finetune_epochs,
    ),
    Stage(
        "evaluate",
        "graftflow.core.stages.evaluate",
        "Evaluate the fine-tuned model on held-out images it has never seen.",
        gpu=True,
        outputs=("metrics", "confusion_matrix", "predictions", "top_losses", "gallery"),
        reads=("evaluate",),
    ),
    Stage(
        "export",
        "graftflow.core.stages.export",
        "Export the model and verify each format against eager on a real batch.",
        gpu=True,
        outputs=("exports", "model_meta"),
        reads=("export",),
    ),
    Stage(
        "predict",
        "graftflow.core.stages.predict",
        "Score new images (a folder, a bucket, an archive, a split) with a trained model: a predictions file.",
        chain=False,
        gpu=True,
        outputs=("predictions", "record", "gallery"),
        reads=("predict",),
    ),
    Stage(
        "lr-find",
        "graftflow.core.stages.lr_find",
        "LR range test on the fine-tuning task (acquires first if the run has no data yet); weights are untouched.",
        chain=False,
        gpu=True,
        outputs=("plot", "result"),
        reads=("finetune",),
        prepare=("acquire",),
    ),
)

BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
CHAIN: tuple[str, ...] = tuple(s.name for s in STAGES if s.chain)


def stage(name: str) -> Stage:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown stage '{name}'; stages are {', '.join(BY_NAME)}") from None


def parse_stages(text: str | None) -> list[str]:
    """`--stages a,b`: chain stages in chain order (all of them when empty)."""
    if not text:
        return list(CHAIN)
    names = [s.strip() for s in re.split(r"[,\s]+", text) if s.strip()]
    unknown = [s for s in names if s not in CHAIN]
    if unknown:
        raise ConfigError(f"--stages: unknown stage '{unknown[0]}'; stages are {', '.join(CHAIN)}")
    return [s for s in CHAIN if s in names]
