"""The pipeline config: one pydantic model per section.

These models are the single source of truth: the YAML file, `--set`
overrides, the Prefect flow parameters and the UI's parameter form are all
this schema. Sections forbid unknown keys so typos fail fast; a plugin
reference (`{name: ..., <params>}`) keeps its extra keys for the plugin's own
params model, which `graftflow.core.validation` checks against the registries.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from graftflow.core.errors import ConfigError

# A field (or plugin parameter) naming a local file or folder: in a config file, a relative value
# resolves from the file's folder (`resolve_paths`). URLs and absolute paths are kept as written.
LOCAL_PATH: dict[str, Any] = {"format": "path"}


def default_cache_dir() -> str:
    """$GRAFT_CACHE_DIR, else $XDG_CACHE_HOME/graftflow/datasets, else ~/.cache/graftflow/datasets."""
    if os.environ.get("GRAFT_CACHE_DIR"):
        return os.environ["GRAFT_CACHE_DIR"]
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(cache) / "graftflow" / "datasets")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PluginRef(BaseModel):
    """A plugin by name plus its parameters, written flat: `{name: focal, gamma: 2}`.

    A bare string is shorthand for `{name: <string>}`.
    """

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="Registered plugin name (see `graft plugins`).")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _learning_rate(value: Any) -> Any:
    """A positive number, or `[lo, hi]` with 0 < lo <= hi (fastai's slice(lo, hi))."""
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"expected a number or [lo, hi], got {value!r}") from None
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"expected a number or [lo, hi], got a list of {len(value)}")
        lo, hi = (_positive(v) for v in value)
        if lo > hi:
            raise ValueError(f"[lo, hi] needs lo <= hi, got [{lo}, {hi}]")
        return [lo, hi]
    return _positive(value)


def _positive(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"learning rate must be a number, got {value!r}") from None
    if not number > 0:
        raise ValueError(f"learning rate must be > 0, got {value}")
    return number


LearningRate = Annotated[float | list[float], BeforeValidator(_learning_rate)]

DEFAULT_TTA_VIEWS = ("original", "hflip", "zoom:0.9", "hflip+zoom:0.9")
TTA_OPS = ("original", "hflip", "vflip", "zoom")


def parse_tta_view(view: str) -> list[tuple[str, float | None]]:
    """`hflip+zoom:0.9` → [("hflip", None), ("zoom", 0.9)]; a ValueError naming what does not parse."""
    ops: list[tuple[str, float | None]] = []
    for part in str(view).split("+"):
        name, _, arg = part.strip().partition(":")
        if name not in TTA_OPS or (name == "zoom") != bool(arg):
            raise ValueError(f"TTA view '{view}': expected {', '.join(TTA_OPS[:3])} or zoom:F, joined with +")
        if name == "zoom":
            try:
                fraction = float(arg)
            except ValueError:
                fraction = -1.0
            if not 0 < fraction <= 1:
                raise ValueError(f"TTA view '{view}': zoom takes a fraction in (0, 1], got '{arg}'")
            ops.append((name, fraction))
        else:
            ops.append((name, None))
    return ops


def parse_tta_views(value: Any) -> list[str]:
    """`original,hflip` or a list → the checked list of views."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("expected a non-empty list of views, e.g. [original, hflip]")
    for view in value:
        parse_tta_view(view)
    return [str(v).strip() for v in value]


TTAViews = Annotated[list[str], BeforeValidator(parse_tta_views)]
ClassList = Annotated[list[str] | None, BeforeValidator(lambda v: None if v is None else [str(c) for c in v])]


class SplitConfig(Section):
    val: float = Field(0.1, ge=0, lt=1, description="Fraction of each class held out for validation.")
    test: float = Field(0.2, ge=0, lt=1, description="Fraction of each class held out for the final test.")
    seed: int = Field(0, description="Seed of the stratified split (independent of the training seed).")

    @model_validator(mode="after")
    def _room_for_training(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError(f"val + test must be < 1, got {self.val} + {self.test}")
        return self


class SourceConfig(BaseModel):
    """`kind` selects a data-source plugin; the other keys are its parameters."""

    model_config = ConfigDict(extra="allow")
    kind: str = Field("sklearn-digits", description="Data-source plugin (sklearn-digits, folder, ...).")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(Section):
    source: SourceConfig = Field(default_factory=SourceConfig, description="Where the images come from.")
    image_size: PositiveInt | Literal["auto"] = Field(
        32,
        description="Images are resized to image_size × image_size pixels (auto: the pretrained weights' input size).",
    )
    channels: Literal[1, 3] = Field(3, description="1 = grayscale, 3 = RGB.")
    mean: list[float] | Literal["auto"] = Field(
        [0.5],
        description="Per-channel normalisation mean (one value = all channels; auto: the pretrained weights' "
        "pretrained_cfg, averaged over RGB for 1 channel).",
    )
    std: list[PositiveFloat] | Literal["auto"] = Field(
        [0.5], description="Per-channel normalisation std (auto: the pretrained weights' pretrained_cfg)."
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    cache_dir: str | None = Field(
        None,
        description="Folder of the content-addressed Arrow stores (any fsspec URL; relative: from the config "
        "file's folder). Unset: $GRAFT_CACHE_DIR, else $XDG_CACHE_HOME/graftflow/datasets "
        "(~/.cache/graftflow/datasets).",
        json_schema_extra=LOCAL_PATH,
    )
    batch_size: PositiveInt = Field(64, description="Training batch size.")
    num_workers: NonNegativeInt | Literal["auto"] = Field(
        0,
        description="DataLoader worker processes (0 = in the main process; auto = min(4, CPUs − 1) when the "
        "split has at least 1,000 images, else 0).",
    )
    prefetch_factor: PositiveInt | None = Field(
        None, description="Batches each worker loads ahead (None = torch's default of 2; unused with 0 workers)."
    )
    persistent_workers: bool = Field(True, description="Keep worker processes alive between epochs.")
    cache_decoded: bool | Literal["auto"] = Field(
        "auto",
        description="Decode and resize each split once into a uint8 tensor in memory (auto: when it fits "
        "in 1 GiB), instead of decoding every image every epoch.",
    )
    retries: NonNegativeInt = Field(
        3, description="Acquire is retried this many times after a passing failure (HTTP 5xx, a dropped connection)."
    )
    retry_delay: NonNegativeFloat = Field(
        5.0, description="Seconds before the first acquire retry; each further retry waits twice as long."
    )

    @field_validator("mean", "std", mode="after")
    @classmethod
    def _one_value_per_channel(cls, values: Any, info: ValidationInfo) -> Any:
        """One value (for every channel) or one per channel; "auto" (from the weights) is checked later."""
        channels = info.data.get("channels")  # absent when channels itself is invalid
        if isinstance(values, list) and channels is not None and len(values) not in (1, channels):
            raise ValueError(
                f"{len(values)} values for {channels} channel{'s' if channels > 1 else ''} (data.channels); "
                f"give one value for all channels, or one per channel"
            )
        return values

    @property
    def store_root(self) -> str:
        """Where Arrow stores live: `cache_dir`, else $GRAFT_CACHE_DIR, else the user's cache folder."""
        return self.cache_dir or default_cache_dir()


class ModelConfig(BaseModel):
    """The backbone shared by pretraining and fine-tuning; extra keys go to the family's build."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    family: str = Field("resnet", description="Model-family plugin (resnet, vit, ...).")
    variant: str = Field("tiny", description="Variant within the family (see `graft plugins`).")
    weights: str | None = Field(
        None,
        description="Initial weights: a local or fsspec .safetensors file (head keys are dropped; relative: from "
        "the config file's folder).",
        json_schema_extra=LOCAL_PATH,
    )
    pretrained: bool | str | None = Field(
        None,
        description="Pretrained weights through timm's loader: true (the variant's default weights), a tag "
        "(resnet50.a1_in1k), hf-hub:ORG/NAME, or a local path / fsspec URL of a .safetensors file; the stem is "
        "adapted to data.channels and the classifier replaced.",
    )

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class AugmentConfig(Section):
    train: list[PluginRef] = Field(default_factory=list, description="Augmentations applied while training.")
    eval: list[PluginRef] = Field(default_factory=list, description="Transforms applied at evaluation.")
    preview: NonNegativeInt = Field(8, description="Images in the augmentation preview grid (0 = none).")
    materialize: NonNegativeInt = Field(
        0,
        description="Write K augmented copies of the train split (plus the untouched val/test rows) into a new "
        "Arrow store that later stages train on (0 = off; for tiny datasets).",
    )


class TrainingConfig(Section):
    classes: ClassList = Field(None, description="Class filter: only these class names, relabelled 0..k-1.")
    epochs: NonNegativeInt = Field(3, description="Epochs of training.")
    lr: LearningRate = Field(1e-3, description="Learning rate; [lo, hi] spreads it geometrically input→head.")
    weight_decay: NonNegativeFloat = Field(0.01, description="Decoupled weight decay (not on norms and biases).")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="Optimizer.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    layer_decay: float | None = Field(
        None, gt=0, le=1, description="Layer-wise LR decay: a group's LR is lr × decay^(groups above it) (timm/BEiT)."
    )
    schedule: Literal["one-cycle", "cosine", "constant", "plateau"] = Field(
        "one-cycle", description="LR schedule per phase; every group is scaled by the same factor of its own LR."
    )
    warmup: float = Field(0.25, ge=0, lt=1, description="Fraction of each phase spent warming up.")
    plateau_patience: NonNegativeInt = Field(1, description="plateau: epochs without improvement before the LR drops.")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="plateau: the LR is multiplied by this on a plateau.")
    batch_size: PositiveInt | None = Field(None, description="Overrides data.batch_size for this stage.")
    loss: PluginRef = Field(default_factory=lambda: PluginRef(name="cross-entropy"), description="Loss plugin.")

    @model_validator(mode="after")
    def _one_way_to_spread(self) -> TrainingConfig:
        if self.layer_decay is not None and isinstance(self.lr, list):
            raise ValueError(
                "layer_decay spreads a single lr; give lr as one number, or drop layer_decay to use [lo, hi]"
            )
        return self


class LossRef(PluginRef):
    """A loss named inside another loss's parameters (flooding's `inner`): checked like `finetune.loss`."""


class PretrainConfig(TrainingConfig):
    enabled: bool = Field(
        False,
        description="Run the pretrain stage (off unless asked: a config that transfers from a source task, or "
        "pretrains self-supervised, sets it); when off, fine-tuning starts from model.weights or scratch.",
    )
    pretext: PluginRef = Field(default_factory=lambda: PluginRef(name="supervised"), description="Pretext task plugin.")
    loss: PluginRef | None = Field(
        None,
        description="Loss plugin; unset: the pretext's own default (cross-entropy for supervised, infonce for "
        "simclr/moco; simmim takes none).",
    )
    source: SourceConfig | None = Field(
        None,
        description="A separate (e.g. unlabelled) image source to pretrain on, acquired into its own store; "
        "unset: the main data (pretrain.classes filters it).",
    )


class LRFindConfig(Section):
    start: PositiveFloat = Field(1e-7, description="LR range test: first (head) LR.")
    end: PositiveFloat = Field(10.0, description="LR range test: last (head) LR.")
    steps: PositiveInt = Field(100, description="LR range test: at most this many batches.")


class FinetuneConfig(TrainingConfig):
    freeze_epochs: NonNegativeInt | None = Field(
        None,
        description="Head-only epochs with the body frozen, before the rest. Unset: 1 when fine-tuning starts "
        "from pretrained weights (this run's pretrain stage, model.weights or model.pretrained), else 0 "
        "(nothing pretrained to protect).",
    )
    pretrained: bool = Field(True, description="Start from the pretrain stage's backbone when this run has one.")
    labels_per_class: PositiveInt | None = Field(
        None, description="Fine-tune on only this many labelled train images per class (a fixed subsample by `seed`)."
    )
    unfreeze: Literal["all", "gradual"] = Field(
        "all", description="After the head-only epochs: everything at once, or one more group per epoch from the head."
    )
    bn: Literal["train", "freeze-stats", "freeze"] = Field(
        "train", description="BatchNorm: train normally, keep running statistics fixed, or also freeze its weights."
    )
    monitor: str = Field(
        "val_loss",
        description="Validation metric for early stopping, plateau and the best checkpoint: val_loss, or one the "
        "task or the method declares (val_accuracy: classification; val_dice: segmentation; val_map: "
        "multilabel; target_entropy: the domain-adaptation methods). `graft validate` lists what is available.",
    )
    early_stopping: PositiveInt | None = Field(None, description="Stop after this many epochs without improvement.")
    restore_best: bool = Field(True, description="End with the weights of the best epoch by `monitor`.")
    ema: float | None = Field(
        None, gt=0, lt=1, description="Keep an exponential moving average of the weights (e.g. 0.999) and use it."
    )
    lr_find: LRFindConfig = Field(default_factory=LRFindConfig, description="Settings of `graft lr-find`.")
    method: PluginRef = Field(
        default_factory=lambda: PluginRef(name="standard"),
        description="Fine-tuning method plugin (standard, mmd, dann, cdan, lwf) and its parameters; domain adaptation "
        "methods take `target:`, an unlabelled data source block.",
    )
    head: Literal["new", "extend"] = Field(
        "new",
        description="new: a fresh head for finetune.classes; extend: the pretrained head keeps its classes "
        "(pretrain.classes) and the new ones are appended (class-incremental learning, e.g. method lwf).",
    )


class EvaluateConfig(Section):
    split: Literal["test", "val"] = Field("test", description="Split to evaluate on.")
    probe: Literal["none", "linear", "knn"] = Field(
        "none",
        description="Also probe a frozen backbone (the pretrain stage's, else the fine-tuned one): "
        "logistic regression or kNN on its features of the fine-tuning train images.",
    )
    probe_k: PositiveInt = Field(20, description="knn probe: neighbours (cosine similarity, distance-weighted).")
    tta: bool = Field(
        False,
        description="Also score with test-time augmentation: softmax averaged over tta_views (metrics with and "
        "without).",
    )
    tta_views: TTAViews = Field(
        default_factory=lambda: list(DEFAULT_TTA_VIEWS),
        description="TTA views: original, hflip, vflip, zoom:F (centre crop of fraction F, resized back), "
        "joined with + (hflip+zoom:0.9).",
    )


class PredictConfig(Section):
    """The `predict` flow: batch scoring of new images with a trained model (`graft predict` is the same code)."""

    model: str | None = Field(
        None,
        description="A run id, a run folder, a model folder (finetune/model) or an export folder; unset: the "
        "fine-tuned model of the run being continued (run_id).",
    )
    inputs: list[str] = Field(
        default_factory=list,
        description="Image files, folders, globs, fsspec URLs (s3://bucket/new/), zip or tar archives.",
    )
    split: Literal["train", "val", "test"] | None = Field(
        None, description="Also score this split of the model's own run store."
    )
    out: str | None = Field(None, description="Also write the predictions here (.csv or .parquet, any fsspec URL).")
    top_k: PositiveInt = Field(3, description="Classes (with probabilities) kept per image.")
    tta: bool = Field(False, description="Average softmax over `tta_views`.")
    tta_views: TTAViews = Field(default_factory=lambda: list(DEFAULT_TTA_VIEWS), description="TTA views.")
    engine: Literal["eager", "onnx", "torchscript"] = Field(
        "eager", description="eager (PyTorch), or the run's ONNX / TorchScript export."
    )
    batch_size: PositiveInt = Field(64, description="Images per forward pass.")


class ExportConfig(Section):
    formats: list[str] = Field(["torchscript", "onnx", "safetensors"], description="Exporter plugins to run.")
    tolerance: PositiveFloat = Field(1e-4, description="Largest allowed |exported − eager| on a real batch.")
    batch: PositiveInt = Field(8, description="Images in the verification batch.")


class CheckpointConfig(Section):
    every_steps: PositiveInt | None = Field(
        100, description="Checkpoint training every N steps (and at every epoch end)."
    )
    keep: PositiveInt = Field(2, description="Checkpoints kept per stage while it runs (removed when it succeeds).")


class DistributedConfig(Section):
    """DDP for the training stages: `nproc_per_node` processes on each of `nnodes` hosts.

    Across hosts, each host's worker runs the same stage of the same run (`run_id`) with its own
    `node_rank`; they meet at node 0's c10d rendezvous (`rdzv_endpoint`), and global rank 0 writes.
    """

    nproc_per_node: PositiveInt = Field(1, description="Processes (one per GPU) for training stages; > 1 launches DDP.")
    nnodes: PositiveInt = Field(
        1, description="Hosts that train together; > 1: every host runs the stage with its own node_rank."
    )
    node_rank: NonNegativeInt = Field(
        0, description="This host's index, 0..nnodes-1; node 0 hosts the c10d rendezvous at rdzv_endpoint."
    )
    rdzv_endpoint: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._\[\]:-]+:\d+$",
        description="HOST:PORT of the c10d rendezvous on node 0, reachable from every host (needed when nnodes > 1).",
    )
    rdzv_timeout: PositiveInt = Field(600, description="Seconds to wait for every host to join the rendezvous.")

    @model_validator(mode="after")
    def _hosts_agree(self) -> DistributedConfig:
        if self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank must be < nnodes ({self.nnodes}), got {self.node_rank}")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError("nnodes > 1 needs rdzv_endpoint: HOST:PORT of node 0, reachable from every host")
        return self

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


class GpuSlotConfig(Section):
    name: str = Field("gpu", description="Prefect global concurrency limit that GPU stages hold one slot of.")
    hold: Literal["auto", "always", "never"] = Field(
        "auto", description="auto: only when the run uses CUDA; always: every training stage (e.g. CPU-bound hosts)."
    )


class PromoteConfig(Section):
    metric: str = Field(
        description="The metric that decides, dotted inside summary.json `metrics`: test.macro_f1, test.accuracy."
    )
    mode: Literal["max", "min"] = Field("max", description="max: a higher value is better; min: a lower one.")
    alias: str = Field(
        "champion", pattern=r"^[A-Za-z0-9_-]+$", description="Registry alias moved to the better model version."
    )


class TrackingConfig(Section):
    """What a tracker plugin (e.g. graftflow.plugins.trackers.mlflow, named in `plugins:`) records where."""

    uri: str | None = Field(
        None,
        description="Tracking URI (a folder, http(s)://, sqlite:///...); unset: $MLFLOW_TRACKING_URI, else ./mlruns.",
    )
    experiment: str | None = Field(None, description="Experiment name; unset: the pipeline's name.")
    registered_model: str | None = Field(
        None, description="Registered model the fine-tuned model becomes a version of; unset: the pipeline's name."
    )
    log_model: bool = Field(True, description="Log the fine-tuned model and register it as a new model version.")
    promote: PromoteConfig | None = Field(
        None, description="Move an alias (champion) to the new version when it beats the current holder's metric."
    )


class StorageConfig(Section):
    """Where s3:// locations (artifact_root, data.cache_dir, a folder source) take their credentials from."""

    secret_block: str | None = Field(
        None,
        pattern=r"^[a-z0-9-]+$",
        description='Prefect Secret block holding {"aws_access_key_id", "aws_secret_access_key"} and optionally '
        '"aws_session_token", "endpoint_url", "region_name"; unset: the environment (AWS_* variables, a profile, '
        "an instance role).",
    )


class PipelineConfig(Section):
    """A whole transfer-learning pipeline: acquire → augment → pretrain → finetune → evaluate → export."""

    name: str = Field(
        "transfer",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="Pipeline name; runs go under artifact_root/name/.",
    )
    artifact_root: str = Field(
        "./.graft/runs",
        description="Where runs are written (any fsspec URL); a relative path is from the folder the command runs in.",
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="auto, cpu, cuda, cuda:N or mps.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field("auto", description="Mixed precision policy.")
    seed: int = Field(0, description="Seed for weights init, shuffling and augmentation.")
    compile: bool = Field(
        False, description="torch.compile the model for training (falls back to eager with a warning)."
    )
    checkpoints: CheckpointConfig = Field(
        default_factory=CheckpointConfig,
        description="Resumable training: `graft run --run-id ID` continues from the last one.",
    )
    distributed: DistributedConfig = Field(
        default_factory=DistributedConfig, description="DDP through torch.distributed.run (gloo on CPU, NCCL on CUDA)."
    )
    gpu_slot: GpuSlotConfig = Field(
        default_factory=GpuSlotConfig,
        description="On a Prefect server, training stages queue for a global concurrency slot.",
    )
    plugins: list[str] = Field(
        default_factory=list,
        description="Extra plugin modules or .py files to load (a relative .py path: from the config file's folder).",
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Experiment tracking and the model registry (tracker plugins)."
    )
    storage: StorageConfig = Field(
        default_factory=StorageConfig, description="Credentials for s3:// locations (never written anywhere)."
    )
    task: PluginRef = Field(
        default_factory=lambda: PluginRef(name="classification"),
        description="Task plugin: what the model predicts (classification, multilabel, segmentation, ...) and "
        "its parameters (segmentation: decoder, threshold).",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig, description="Batch scoring (the predict flow).")

    @field_validator("artifact_root")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


# --- loading --------------------------------------------------------------------


# The parts pydantic adds to a location for a validator or a union's alternative (`PositiveInt | Literal["auto"]`
# gives `constrained-int` and `literal['auto']`): not fields, so never in a message.
_NOT_A_FIELD = re.compile(
    r"^(function-.*|constrained-\w+|literal\[.*\]|(list|dict|tuple|set)\[.*\]|int|float|str|bool|none|[A-Z]\w*)$"
)


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per field with a problem, starting with its dotted path.

    A union's alternatives (`list[float] | "auto"`) make one line: the alternatives that got deepest into
    the value (`data.std[0]`, the list the user wrote) if some did, else all of them joined with "or"."""
    found: list[tuple[int, str, str]] = []  # (where the field's first error came, path, message)
    unions: dict[tuple, list[tuple[int, int, str, str]]] = {}
    for index, err in enumerate(exc.errors()):
        parts = list(err["loc"])
        fields = [p for p in parts if not _not_a_field(p)]
        loc = dotted(fields)
        path = (f"{prefix}{loc}" if loc.startswith("[") else ".".join(filter(None, [prefix, loc]))) or "config"
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        tag = next((i for i, p in enumerate(parts) if _not_a_field(p) and not str(p).startswith("function-")), None)
        if tag is None:
            found.append((index, path, msg))
        else:
            unions.setdefault(tuple(parts[:tag]), []).append((index, len(fields), path, msg))
    for alternatives in unions.values():
        first, deepest = alternatives[0][0], max(a[1] for a in alternatives)
        found += [(first, path, msg) for _, depth, path, msg in alternatives if depth == deepest]
    problems: dict[str, list[str]] = {}
    for _, path, msg in sorted(found, key=lambda f: f[0]):
        problems.setdefault(path, [])
        if msg not in problems[path]:
            problems[path].append(msg)
    return "\n".join(f"{path}: {_either(msgs)}" for path, msgs in problems.items())


def _not_a_field(part: Any) -> bool:
    return isinstance(part, str) and bool(_NOT_A_FIELD.match(part))


def _either(messages: list[str]) -> str:
    """`Input should be greater than 0` and `Input should be 'auto'` → `Input should be greater than 0 or 'auto'`."""
    lead = "Input should be "
    if len(messages) > 1 and all(m.startswith(lead) for m in messages):
        return lead + " or ".join(m.removeprefix(lead) for m in messages)
    return " or ".join(messages)


def dotted(loc: Sequence[Any]) -> str:
    """`("augment", "train", 0, "name")` → `augment.train[0].name`, as every message names a field."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def within(field: str, section: str) -> bool:
    """Whether `field` is `section` or inside it (`a.b[0].c` is inside `a.b`)."""
    return field == section or field.startswith((section + ".", section + "["))


PLUGIN_SELECTORS = ("name", "kind")


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `--set a.b.c=value`; the value is parsed as YAML (numbers, lists, ...).

    Setting a plugin reference's `name` (or a source's `kind`) to a different
    plugin drops the parameters written for the previous one. A value that opens
    a YAML list, mapping or quote but does not parse is an error naming the field;
    any other text that is not YAML is taken as a plain string.
    """
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment}: expected FIELD=VALUE, e.g. finetune.epochs=3")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set {assignment}: '{key.strip()}' is not a field path (a.b.c)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        if raw.strip()[0] in "[{\"'":
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"{key.strip()}: --set value {raw.strip()!r} is not valid YAML: {problem}") from None
        value = raw
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str) and part in ("loss", "pretext", "method", "task"):
            child = node[part] = {"name": child}
        elif not isinstance(child, dict):
            raise ConfigError(f"--set {assignment}: '{part}' is not a section")
        node = child
    if parts[-1] in PLUGIN_SELECTORS and node.get(parts[-1]) not in (None, value) and _selects_plugin(parts[:-1]):
        # Another plugin is chosen: the old one's parameters mean nothing to it.
        for key in [k for k in node if k != parts[-1]]:
            del node[key]
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """Apply every `--set`; returns one problem line per override that cannot be applied."""
    problems = []
    for assignment in overrides:
        try:
            apply_override(data, assignment)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds (through Optional / unions / lists), if any."""
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        inner = getattr(candidate, "__args__", None)
        if inner and getattr(candidate, "__origin__", None) is list:
            candidates.extend(inner)
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _selects_plugin(path: list[str]) -> bool:
    """Whether the field at `path` is a plugin reference (a loss, pretext, source), by the schema."""
    model: Any = PipelineConfig
    for part in path:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return False
        model = _model_of(field.annotation)
        if model is None:
            return False
    return model is not PipelineConfig and issubclass(model, (PluginRef, SourceConfig))


# --- paths relative to the config file --------------------------------------------


def is_relative_local(value: Any) -> bool:
    """A relative path on the local disk: not a URL (`s3://`), not absolute, not `~`."""
    return (
        isinstance(value, str)
        and bool(value.strip())
        and "://" not in value
        and not os.path.isabs(os.path.expanduser(value))
    )


def is_path_field(info: Any) -> bool:
    extra = getattr(info, "json_schema_extra", None)
    return isinstance(extra, dict) and extra.get("format") == LOCAL_PATH["format"]


ParamsLookup = Callable[[str, str], "type[BaseModel] | None"]


def resolve_paths(
    data: dict[str, Any], base: str | Path, params_model: ParamsLookup | None = None, skip: Sequence[str] = ()
) -> dict[str, Any]:
    """Make the relative local paths written in a config file absolute, from the file's folder `base`.

    Fields marked `LOCAL_PATH`, `.py` entries of `plugins`, and the parameters of a
    source or loss that its params model marks (found through `params_model(field,
    plugin name)`). Dotted paths in `skip` (and below them) were set on the command
    line and are left as typed (relative to the current folder). Changes `data` in place.
    """
    base = os.path.abspath(base)
    skipped = tuple(skip)

    def overridden(path: str) -> bool:
        return any(path == s or path.startswith(s + ".") for s in skipped)

    def fix(node: dict, key: str, path: str) -> None:
        if not overridden(path) and is_relative_local(node.get(key)):
            node[key] = os.path.normpath(os.path.join(base, os.path.expanduser(node[key])))

    def walk(model: type[BaseModel], node: Any, prefix: str) -> None:
        if not isinstance(node, dict):
            return
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            if name not in node:
                continue
            if is_path_field(info):
                fix(node, name, path)
                continue
            sub = _model_of(info.annotation)
            if sub is None:
                continue
            if issubclass(sub, (PluginRef, SourceConfig)):
                selector = "kind" if issubclass(sub, SourceConfig) else "name"
                value = node[name]
                if isinstance(value, dict) and params_model is not None and isinstance(value.get(selector), str):
                    params = params_model(path, value[selector])
                    if params is not None:
                        walk(params, value, path + ".")
            elif issubclass(sub, BaseModel):
                walk(sub, node[name], path + ".")

    walk(PipelineConfig, data, "")
    plugins = data.get("plugins")
    if isinstance(plugins, list) and not overridden("plugins"):
        for i, ref in enumerate(plugins):
            if isinstance(ref, str) and (ref.endswith(".py") or "/" in ref) and is_relative_local(ref):
                plugins[i] = os.path.normpath(os.path.join(base, ref))
    return data


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The dotted fields a list of `--set FIELD=VALUE` assigns."""
    return [o.partition("=")[0].strip() for o in overrides if "=" in o]


# --- every problem at once ----------------------------------------------------------


def _drop(data: Any, loc: Sequence[Any]) -> str | None:
    """Remove the deepest part of `data` that `loc` reaches, so the field falls back to its default.

    Returns the dotted path removed, or None when nothing could be (a problem at the top level).
    """
    node, path = data, []
    for part in loc:
        if isinstance(node, dict) and part in node:
            parent, node = node, node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            parent, node = node, node[part]
        else:
            break
        path.append(part)
    if not path:
        return None
    del parent[path[-1]]
    return dotted(path)


def _drop_each(data: dict[str, Any], errors: list[dict[str, Any]]) -> list[str | None]:
    """`_drop` for every error's field, once: a union's alternatives name one field several times, and
    dropping it again would reach its parent (the whole section) instead."""
    removed, reached = [], []
    for err in errors:
        fields = tuple(p for p in err["loc"] if not _not_a_field(p))
        if any(fields[: len(r)] == r for r in reached):
            continue
        reached.append(fields)
        removed.append(_drop(data, fields))
    return removed


def parse_partial(data: Any) -> tuple[PipelineConfig | None, list[str], list[str]]:
    """The config with every invalid field back at its default, the problems, and the fields dropped.

    Problems are one line each, as `parse_config` gives them. A later round (a check
    that could only run once a field was dropped, e.g. `data.mean` against a valid
    `data.channels`) adds its problems, except a whole section's check over a field
    that was set back to its default (`data.split`'s val + test with a stand-in val).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        return None, [f"config: expected a mapping of sections at the top level, got {type(data).__name__}"], []
    work = copy.deepcopy(data)
    problems: list[str] = []
    dropped: list[str] = []
    for _ in range(32):
        try:
            return PipelineConfig.model_validate(work), problems, dropped
        except ValidationError as exc:
            errors = exc.errors()
            for line in format_validation_error(exc).splitlines():
                field = line.split(":", 1)[0]
                if not any(within(d, field) and d != field for d in dropped):  # a section's check of a stand-in
                    problems.append(line)
            removed = _drop_each(work, errors)
            if not any(removed):
                return None, list(dict.fromkeys(problems)), dropped
            dropped += [r for r in removed if r]
    return None, list(dict.fromkeys(problems)), dropped


def parse_config(data: Any, source: str = "config") -> PipelineConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file does not exist")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: YAML syntax error: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: YAML syntax error: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data or {}


def load_config(
    path: str | Path, overrides: Sequence[str] = (), params_model: ParamsLookup | None = None
) -> PipelineConfig:
    """The config in `path` with relative paths resolved from its folder, then the `--set` overrides."""
    data = resolve_paths(read_yaml(path), Path(path).parent, params_model)
    for assignment in overrides:
        apply_override(data, assignment)
    return parse_config(data, str(path))


# --- what the rest of the config implies --------------------------------------------


def starts_pretrained(config: PipelineConfig, pretrain_completed: bool) -> bool:
    """Whether fine-tuning starts from learned weights: this run's pretrain stage (when
    `finetune.pretrained`), `model.weights`, or `model.pretrained`."""
    pretrained = getattr(config.model, "pretrained", None)
    return bool(
        (pretrain_completed and config.finetune.pretrained)
        or config.model.weights
        or (pretrained is not None and pretrained is not False and str(pretrained).lower() not in ("false", "no"))
    )


def pretrains(config: PipelineConfig) -> bool:
    """Whether the pretrain stage trains at all: enabled, with epochs to run (else it is skipped)."""
    return config.pretrain.enabled and config.pretrain.epochs > 0


def head_only_epochs(config: PipelineConfig, pretrain_completed: bool) -> int:
    """`finetune.freeze_epochs`, or unset: 1 when there are pretrained weights to protect, else 0."""
    explicit = config.finetune.freeze_epochs
    if explicit is not None:
        return explicit
    return 1 if starts_pretrained(config, pretrain_completed) else 0
