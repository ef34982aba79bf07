"""The typed objects plugins hand to the core.

Registration hooks return lists of these. They are plain frozen dataclasses so
that a plugin in one file can build them without touching our internals, and
so that the registries can list them (`graft plugins`) with their origin.

Every spec that takes user parameters may name a pydantic `params_model`; the
core validates the YAML against it before any stage runs, so a typo in
`finetune.loss.label_smothing` is a one-line error, not a crash mid-training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # torch is heavy; specs are imported by `graft plugins` too.
    import torch
    from torch import nn


class Params(BaseModel):
    """The base of a plugin's `params_model`: the keys a config may write next to the plugin's name.

    Unknown keys are errors (a typo is one line naming the field, before any
    stage runs); give every field a default and a `Field(description=...)`,
    which `graft plugins -v` and the config schema show.
    """

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Monitor:
    """A metric `finetune.monitor` may name, and which way is better (added in contract 2.5).

    Tasks (`TaskSpec.monitors`) and fine-tuning methods (`MethodSpec.monitors`) declare
    the metrics they report each epoch; best-epoch selection, early stopping and plateau
    scheduling take `mode` from here ("min": lower is better, "max": higher), never from
    the metric's name, so a plugin's `val_mae` or `val_f1` is selected the right way.
    """

    name: str
    mode: Literal["min", "max"]

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"Monitor '{self.name}': mode must be 'min' or 'max', got '{self.mode}'")

    def better(self, value: float, than: float | None, min_delta: float = 0.0) -> bool:
        """Whether `value` improves on `than` (None: nothing yet) by more than `min_delta`."""
        if than is None:
            return True
        return (than - value if self.mode == "min" else value - than) > min_delta


VAL_LOSS = Monitor("val_loss", "min")


def _check_monitors(kind: str, name: str, monitors: Sequence[Any]) -> None:
    """Monitors are `Monitor(name, mode)`: a bare name (contract ≤ 2.4) would leave selection guessing the way."""
    for m in monitors:
        if not isinstance(m, Monitor):
            raise TypeError(f"{kind} '{name}': monitors holds {m!r}; declare Monitor(name, 'min' | 'max') instead")


@dataclass(frozen=True)
class LayerGroup:
    """A slice of the network, ordered input→head: the unit of freezing and of LRs."""

    name: str
    params: tuple[str, ...]  # names as in model.named_parameters()


@dataclass(frozen=True)
class ModelFamily:
    """An architecture family.

    `build(variant, num_classes=, in_chans=, image_size=, **params)` returns a
    fresh nn.Module whose classifier has `num_classes` outputs (0 = features only).
    `layer_groups(model)` partitions every parameter, input→head; the last group
    is the head, which fine-tuning replaces and trains first.

    `pretrained(variant)` names the timm architecture whose pretrained weights the
    variant takes (None: it has none). A family that sets it also accepts
    `pretrained=` a `PretrainedWeights` in `build` (only ever passed when
    `model.pretrained` is set) and hands it to `create_timm_model`.
    `capabilities_of(variant)`, when set, gives capabilities per variant (a family
    over every timm architecture); otherwise every variant has `capabilities`.
    """

    name: str
    variants: Mapping[str, str]  # variant → one-line description
    build: Callable[..., nn.Module]
    layer_groups: Callable[[nn.Module], list[LayerGroup]]
    reset_head: Callable[[nn.Module, int], None]
    capabilities: frozenset[str] = frozenset()  # e.g. {"channels_last", "masked-image-modeling"}
    params_model: type | None = None
    description: str = ""
    pretrained: Callable[[str], str | None] | None = None
    capabilities_of: Callable[[str], frozenset[str]] | None = None
    # (features, logits) of a batch in one pass, for methods that align features (domain adaptation)
    split_forward: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None

    def variant_capabilities(self, variant: str) -> frozenset[str]:
        """What models of `variant` can do: channels_last, masked-image-modeling, ..."""
        return self.capabilities_of(variant) if self.capabilities_of is not None else self.capabilities


@dataclass(frozen=True)
class LossSpec:
    """`factory(**params)` → nn.Module called as `loss(logits_or_features, target)`.

    `kind` says where it fits: "classification" (`loss(logits, labels)`, the
    fine-tuning and supervised-pretraining objective), a task's own kind
    ("multilabel": logits and multi-hot targets (N, C); "segmentation": mask
    logits and masks (N, C, H, W); a task plugin's `TaskSpec.loss_kind`), "pretext" (`loss(a, b)`
    on two sets of embeddings, e.g. InfoNCE for contrastive pretexts) or
    "auxiliary" (a term a training step adds, e.g. MMD between two domains).

    `uses_context=True`: the factory also gets `context=` a `LossContext`
    (the training split's class counts, building other losses and models).
    `uses_inputs=True`: the module is called as `loss(logits, labels, inputs)`
    with the batch's input images (knowledge distillation runs its teacher on them).
    """

    name: str
    kind: Literal["classification", "multilabel", "segmentation", "regression", "pretext", "auxiliary"] | str
    factory: Callable[..., nn.Module]
    params_model: type | None = None
    description: str = ""
    uses_context: bool = False
    uses_inputs: bool = False
    soft_targets: bool = False  # also takes (N, C) class probabilities as targets (MixUp / CutMix)


@dataclass(frozen=True)
class LossContext:
    """What a loss factory with `uses_context=True` receives as `context=`.

    `field` is the config path of the loss (e.g. "finetune.loss"), for messages;
    `inputs` describes the images the model sees (in_chans, image_size, mean, std).
    `class_counts[i]` is the number of training images of class i (empty when
    the stage trains without labels). `make_loss(ref, field)` builds another
    registered loss from a `{name: ..., <params>}` mapping (flooding's `inner`).
    `load_model(url, field)` → (model, meta) reads a saved model: a directory
    with model.safetensors + model.json (a run's `finetune/model`), or a
    .safetensors file with model.json beside it (distillation's teacher).
    """

    field: str
    num_classes: int
    class_names: Sequence[str]
    class_counts: Sequence[int]
    make_loss: Callable[[Mapping[str, Any], str], nn.Module]
    load_model: Callable[[str, str], tuple[nn.Module, dict[str, Any]]]
    inputs: Mapping[str, Any] = field(default_factory=dict)  # in_chans, image_size, mean, std of the batches


@dataclass(frozen=True)
class ImageRecord:
    """One image as a source yields it: encoded bytes (PNG/JPEG/...) and its label.

    A multi-label source sets `labels` (the image's label set, possibly empty);
    `label` is then only a readable summary. A segmentation source also sets `mask`
    and `mask_classes`. A store holds one kind of target.
    """

    image: bytes
    label: str
    source: str  # where it came from: a path or URL, for provenance
    labels: tuple[str, ...] | None = None  # multi-label targets; None = single-label
    # segmentation: the mask PNG (`graftflow.core.data.masks.encode_mask`, bit c = mask_classes[c]) at the image's
    # size, and the class of each bit; `labels` then names the classes present
    mask: bytes | None = None
    mask_classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DataSource:
    """Where images come from.

    `check(params)` is cheap and runs before any stage (e.g. "path does not exist").
    `fingerprint(params)` identifies the remote content: equal fingerprints mean
    the content-addressed store can be reused without reading a single image.
    `load(params, workdir)` yields ImageRecords; workdir is scratch space,
    deleted afterwards. The iterable it returns may carry a `report` dict
    (e.g. `core.Records`), read once it is exhausted: it is kept with the store
    and shown in summary.json (`data.report`) and the dataset card.
    `cache_exempt` names parameters that do not change what the source yields
    (credential references, download folders): they stay out of the store's address.
    """

    name: str
    load: Callable[[Any, Path], Iterable[ImageRecord]]
    fingerprint: Callable[[Any], str]
    check: Callable[[Any], None] = lambda params: None
    params_model: type | None = None
    description: str = ""
    cache_exempt: frozenset[str] = frozenset()


@dataclass(frozen=True)
class AugmentContext:
    """What an augmentation factory with `uses_context=True` receives as `context=`."""

    num_classes: int
    image_size: int
    channels: int


@dataclass(frozen=True)
class AugmentationSpec:
    """An augmentation, named in `augment.train` / `augment.eval`.

    `factory(**params)` builds the op for its default `placement`:
    - "sample": a callable on one uint8 image tensor (C,H,W) → uint8 (C,H,W), run in
      DataLoader workers before normalisation (torchvision.transforms.v2 ops fit);
    - "batch": a callable `(images, labels) → (images, labels)` on a collated batch
      on the training device, where `images` are float32 (N,C,H,W) in [0, 1] and
      normalisation follows all batch ops. `labels` are int64 (N,) class indices
      or, once a `soft_targets` op ran, float (N, C) class probabilities.
    `batch_factory(**params)`, when given, builds a batch op equivalent to the
    sample op with per-sample randomness, so that the entry may run on the device
    (`placement: batch`, or `auto` on CUDA).
    `uses_context=True`: the factories also get `context=` an `AugmentContext`.
    `soft_targets=True`: the op turns labels into class probabilities (MixUp),
    so the loss must accept them (`LossSpec.soft_targets`).
    `batch_masks` (contract 2.5): what the batch op does when the labels are masks
    (N, classes, H, W) of a segmentation task: "joint" — it moves or cuts the masks with
    the images (CutMix pastes the same box of both); "image-only" — it changes pixels and
    leaves the masks as they are (colour, noise); "refused" (the default: an op that does
    not say) — it would change the images' geometry and not the masks', so a mask task
    refuses it batched, naming the entry, before any work (its per-sample form still runs:
    torchvision v2 transforms move image and mask together).
    """

    name: str
    factory: Callable[..., Callable]
    placement: Literal["sample", "batch"] = "sample"
    params_model: type | None = None
    description: str = ""
    batch_factory: Callable[..., Callable] | None = None
    uses_context: bool = False
    soft_targets: bool = False
    batch_masks: Literal["joint", "image-only", "refused"] = "refused"


@dataclass(frozen=True)
class PretextContext:
    """What a pretext task needs to build its pretraining module."""

    family: ModelFamily
    variant: str
    model_params: Mapping[str, Any]
    in_chans: int
    image_size: int
    num_classes: int  # classes in the pretraining data (0 when unlabeled)
    make_loss: Callable[[], nn.Module] | None  # pretrain.loss (or the pretext's default); None: takes no loss


class PretextModule:  # documented protocol; implementations subclass nn.Module
    """A pretraining wrapper: `step(images, labels) → loss` and `backbone`.

    `backbone` is a model of the configured family whose state_dict is handed to
    fine-tuning; keys of its head group are dropped at hand-off.
    `step` gets the normalised batch on the training device (after batch
    augmentations); a self-supervised pretext makes its own views from it and
    ignores `labels`. Every other trainable parameter of the module (projection
    heads, decoders, mask tokens) is optimised as the group "pretext"; parameters
    with `requires_grad=False` are not, so a MoCo/BYOL-style momentum encoder
    keeps its copy frozen and updates it by EMA at the start of `step`.
    """

    backbone: nn.Module

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class PretextTask:
    """A way to pretrain a backbone; `build(ctx, **params)` → a PretextModule.

    `loss_kind` is the kind of loss it takes from `pretrain.loss` (through
    `PretextContext.make_loss`), or None when it computes its own objective
    (SimMIM's L1 on masked pixels) and `pretrain.loss` must stay unset;
    `default_loss` names the loss used when `pretrain.loss` is not given.
    """

    name: str
    build: Callable[..., Any]
    needs_labels: bool
    families: frozenset[str] | None = None  # None: every family
    params_model: type | None = None
    description: str = ""
    loss_kind: Literal["classification", "pretext"] | None = "classification"
    default_loss: str | None = "cross-entropy"


@dataclass(frozen=True)
class Exporter:
    """Writes a trained model in a deployable format and checks it.

    `export(model, example, dest)` writes files under dest and returns them;
    `verify(files, example, rebuild)` runs the exported artifact on `example`
    and returns its output, which the core compares with eager.
    `rebuild()` gives a fresh, untrained model of the same architecture.
    """

    name: str
    export: Callable[[nn.Module, torch.Tensor, Path], Sequence[Path]]
    verify: Callable[[Sequence[Path], torch.Tensor, Callable[[], nn.Module]], torch.Tensor]
    description: str = ""


@dataclass(frozen=True)
class ModelStore:
    """Fetches models by URI from a registry, e.g. MLflow's `models:/NAME@alias` or `models:/NAME/3`.

    `name` is the URI scheme it serves ("models"). `fetch(uri, dest)` downloads the model
    under the local folder `dest` and returns the folder that holds model.safetensors and
    model.json, as a run's `finetune/model` does.
    """

    name: str
    fetch: Callable[[str, Path], Path]
    description: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """A fine-tuning method, selected by `finetune.method`; `build(**params)` → a `FinetuneMethod`.

    The method object (`graftflow.core.FinetuneMethod`) says what it needs as class
    attributes — a second, unlabelled data stream (`needs_target`: the source block at
    `finetune.method.target` is acquired into a store of its own and its labels are never
    read in training), the model's features (`needs_features`), an extended head
    (`extends_head`), rehearsal exemplars (`replay_per_class`) — and adds loss terms,
    modules and metrics through `loss()` and the training-callback events.

    `needs_target`, `needs_features` and `extends_head` (contract 2.5) say the same on the
    spec, so a config is checked against them without building the method — building
    imports torch, and `graft run` on a config with a typo answers in under a second
    without it. They must agree with the built object's attributes; None (a spec written
    before 2.5) means "build the method and ask it".
    """

    name: str
    build: Callable[..., Any]
    params_model: type | None = None
    description: str = ""
    needs_target: bool | None = None
    needs_features: bool | None = None
    extends_head: bool | None = None
    monitors: tuple[Monitor, ...] = ()  # metrics the method reports each epoch (contract 2.5), e.g. target_entropy

    def __post_init__(self) -> None:
        _check_monitors("MethodSpec", self.name, self.monitors)


@dataclass(frozen=True)
class RunInfo:
    """What observers (event hooks) learn about a run; never the model itself."""

    name: str
    run_id: str
    url: str
    config: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """What a model is trained to predict, selected by `task:` in the config (added in contract 2.3).

    A task says how targets are encoded and batched, which head the model gets, which
    losses it takes, what validation and evaluation measure, and how predictions are
    written; the stages (fine-tune, evaluate, export, predict) call into it, so a new
    task is a plugin, not a branch in the core.

    - `store_targets`: the data-store targets it trains on ("single", "multi", "mask").
    - `loss_kind` / `default_loss`: the `LossSpec.kind` it accepts in `finetune.loss`,
      and the loss used when `finetune.loss` is not set.
    - `monitors`: `Monitor(name, mode)`s of the validation metrics it reports each epoch
      besides `val_loss`, which `finetune.monitor` may name (the first is the natural one;
      `mode` "min" or "max" says which way selection goes; contract 2.5).
    - `dataset(sel, channels, image_size, sample_ops, normalize, cache)` → a torch
      Dataset of (image, target) over a `Selection` (targets encoded for the loss).
    - `build_model(family, meta, params, pretrained)` → the model with the task's head
      (a classifier: the family's own build; segmentation: a decoder over its encoder).
    - `layer_groups(family, model)` → its layer groups, input→head (the last is "head").
    - `validate(model, loader, loss, policy)` → `val_loss` and the task's metrics.
    - `evaluate(ctx)` → the evaluate stage's `StageResult` (metrics.json and artifacts).
    - `predict(outputs, meta, names, sizes, options)` → rows of predictions, one per image,
      from the model's float outputs (None: the core's class probabilities, top-k);
      `write(rows, dest, fmt)` writes them in the task's own `formats` (e.g. "kaggle-rle").
    - `backbone_key(key)`: the model's state-dict key of a pretrain-backbone key (None: dropped),
      so a classifier's backbone seeds the task's encoder.
    - `calibrate(model, val_loader, policy, meta)`: run once fine-tuning ends, on the validation
      split; what it returns is recorded in model.json (multilabel: per-class decision thresholds).
    - `gallery(rows, images, path)` (contract 2.4): a PNG at `path` of the first predictions drawn over
      their images (uint8 (C, H, W) tensors at the images' own size, one per row given); `graft predict`
      and the predict stage write it beside the predictions (segmentation: the predicted masks overlaid).
    """

    name: str
    store_targets: frozenset[str]
    loss_kind: str
    default_loss: str
    dataset: Callable[..., Any]
    build_model: Callable[..., nn.Module]
    layer_groups: Callable[[ModelFamily, nn.Module], list[LayerGroup]]
    validate: Callable[..., dict[str, float]]
    evaluate: Callable[[Any], Any]
    predict: Callable[..., list[dict[str, Any]]] | None = None
    monitors: tuple[Monitor, ...] = ()
    write: Callable[[Sequence[Mapping[str, Any]], Path, str], None] | None = None
    formats: tuple[str, ...] = ()
    backbone_key: Callable[[str], str | None] | None = None
    calibrate: Callable[..., dict[str, Any]] | None = None
    gallery: Callable[[Sequence[Mapping[str, Any]], Sequence[Any], Path], Path] | None = None
    params_model: type | None = None
    description: str = ""

    def __post_init__(self) -> None:
        _check_monitors("TaskSpec", self.name, self.monitors)
