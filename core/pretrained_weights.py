"""`model.pretrained` resolved before anything runs: which weights, what they fit, their cfg, where they are.

`model.pretrained` names weights four ways:

- `true`: the variant's default weights in timm's registry (`resnet50` → `resnet50.a1_in1k`);
- a tag, `resnet50.a1_in1k` or just `a1_in1k` (`graft models resnet50 --pretrained` lists them);
- `hf-hub:ORG/NAME[@REVISION]`: a Hugging Face repo laid out as timm saves one (config.json + weights);
- a local path or fsspec URL of a `.safetensors` file (a `.pth`/`.pt`/`.bin` state_dict is read
  only through `torch.load(weights_only=True)`); a `config.json` beside it supplies the pretrained_cfg.

`resolve_pretrained` turns that into a `PretrainedWeights`: the timm architecture it
fits, the weights' `pretrained_cfg` (mean, std, input size, stem and classifier names)
and a local file, from the Hugging Face cache when it holds them (`graftflow.core.hub`).
Validation calls it with `fetch=False`, so a missing file or an unreachable hub is one
line before any stage runs; `graftflow.core.models.pretrained` builds the model from it.
`auto_inputs` gives `data.mean`, `data.std` and `data.image_size` set to `auto` the
weights' values.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from graftflow.core import hub, storage
from graftflow.core.errors import ConfigError

if TYPE_CHECKING:
    from graftflow.core.config import PipelineConfig
    from graftflow.core.specs import ModelFamily

FIELD = "model.pretrained"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
HUB_WEIGHT_FILES = ["model.safetensors", "pytorch_model.bin"]


@dataclass(frozen=True)
class PretrainedWeights:
    """Weights as `model.pretrained` named them, resolved: what they fit, their cfg, and where they are."""

    request: str  # as written in the config
    architecture: str  # the timm architecture they are weights of
    name: str  # resnet18.a1_in1k, hf-hub:timm/resnet18.a1_in1k, or the file's URL
    kind: Literal["timm", "hf-hub", "file", "url"]
    location: str  # hub repo id, file URL or download URL
    cfg: dict[str, Any] = field(default_factory=dict)  # the weights' pretrained_cfg
    cfg_from: str = ""  # where cfg came from, for the summary
    file: str | None = None  # local path of the weights; None until fetched

    def summary(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "weights": self.name,
            "kind": self.kind,
            "location": self.location,
            "architecture": self.architecture,
            "file": self.file,
            "cfg_from": self.cfg_from,
            "mean": _plain(self.cfg.get("mean")),
            "std": _plain(self.cfg.get("std")),
            "input_size": _plain(self.cfg.get("input_size")),
            "num_classes": self.cfg.get("num_classes"),
        }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


# --- resolving --------------------------------------------------------------------------


def pretrained_architecture(family: ModelFamily, variant: str) -> str:
    """The timm architecture whose weights `variant` takes, or a ConfigError saying which variants have some."""
    if family.pretrained is None:
        raise ConfigError(
            f"{FIELD}: model family '{family.name}' does not load pretrained weights "
            f"(use model.weights for a file of your own)"
        )
    arch = family.pretrained(variant)
    if arch is None:
        with_weights = [v for v in family.variants if family.pretrained(v)]
        raise ConfigError(
            f"{FIELD}: {family.name} '{variant}' has no pretrained weights; variants that do: "
            f"{', '.join(with_weights) or 'none'}"
        )
    return arch


def resolve_pretrained(
    family: ModelFamily, variant: str, value: bool | str | None, *, fetch: bool = True
) -> PretrainedWeights | None:
    """`model.pretrained` resolved for `family`/`variant`, its file local; None when unset.

    `fetch=False` (validation) checks that the weights are cached or can be downloaded,
    without downloading the weights themselves.
    """
    weights = describe_pretrained(family, variant, value)
    if weights is None:
        return None
    return _fetched(weights) if fetch else _available(weights)


def describe_pretrained(family: ModelFamily, variant: str, value: bool | str | None) -> PretrainedWeights | None:
    """Which weights `model.pretrained` names, what they fit and their cfg; the weights file is not looked for."""
    if value is None or value is False or value == "":
        return None
    arch = pretrained_architecture(family, variant)
    request = "true" if value is True else str(value)
    if value is True:
        weights = _from_registry(arch, arch, request)
    elif request.startswith("hf-hub:"):
        weights = _from_hub_repo(arch, request)
    elif _looks_like_file(request):
        weights = _from_file(arch, request)
    else:
        weights = _from_registry(arch, request if "." in request else f"{arch}.{request}", request)
    return weights


def _looks_like_file(text: str) -> bool:
    return (
        "://" in text or "/" in text or "\\" in text or text.lower().endswith(WEIGHT_SUFFIXES) or os.path.isfile(text)
    )


def _from_registry(arch: str, name: str, request: str) -> PretrainedWeights:
    """Weights timm's registry knows by name (`resnet18.a1_in1k`): on the Hub, or at a URL for old ones."""
    import timm

    named_arch, _tag = timm.models.split_model_name_tag(name)
    if named_arch != arch and not timm.is_model(named_arch):
        raise ConfigError(
            f"{FIELD}: '{request}' is neither weights timm knows (ARCHITECTURE.TAG, or a TAG of {arch}) "
            f"nor a weights file ({', '.join(WEIGHT_SUFFIXES)}) nor hf-hub:ORG/NAME"
        )
    if named_arch != arch:
        raise ConfigError(f"{FIELD}: '{request}' are weights of '{named_arch}', but the model is '{arch}'")
    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:
        cfg = None
    known = timm.list_pretrained(f"{arch}.*")
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        hint = f"tags of {arch}: {', '.join(t.split('.', 1)[1] for t in known[:8])}" if known else f"{arch} has none"
        raise ConfigError(f"{FIELD}: timm has no pretrained weights '{name}' ({hint})")
    cfg_dict = cfg.to_dict()
    full = f"{arch}.{cfg.tag}" if cfg.tag else name
    if cfg.hf_hub_id:
        return PretrainedWeights(request, arch, full, "timm", cfg.hf_hub_id, cfg_dict, f"timm registry ({full})")
    return PretrainedWeights(request, arch, full, "url", cfg.url, cfg_dict, f"timm registry ({full})")


def _from_hub_repo(arch: str, request: str) -> PretrainedWeights:
    """`hf-hub:ORG/NAME[@REV]`: the repo's config.json says the architecture and the pretrained_cfg."""
    repo, _, revision = request.removeprefix("hf-hub:").partition("@")
    if repo.count("/") != 1:
        raise ConfigError(f"{FIELD}: '{request}' should be hf-hub:ORG/NAME (optionally @REVISION)")
    what = f"the config of '{request}'"
    config_path = hub.hub_file(repo, ["config.json"], revision=revision or None, field=FIELD, what=what)
    config = storage.read_json(config_path)
    cfg = dict(config.get("pretrained_cfg", {}))
    found = config.get("architecture")
    if found != arch:
        raise ConfigError(f"{FIELD}: '{request}' holds weights of '{found}', but the model is '{arch}'")
    cfg.setdefault("num_classes", config.get("num_classes"))
    location = f"{repo}@{revision}" if revision else repo
    return PretrainedWeights(request, arch, request, "hf-hub", location, cfg, f"{repo}/config.json")


def _from_file(arch: str, url: str) -> PretrainedWeights:
    """A weights file; its cfg from a config.json beside it (a saved HF/timm folder), else the architecture's."""
    import timm

    suffix = PurePosixPath(url.split("?", 1)[0]).suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise ConfigError(
            f"{FIELD}: '{url}' is not a weights file ({', '.join(WEIGHT_SUFFIXES)}), a tag or hf-hub:ORG/NAME"
        )
    if not storage.exists(url):
        raise ConfigError(f"{FIELD}: weights file '{url}' does not exist")
    beside = storage.join(url.rsplit("/", 1)[0], "config.json") if "/" in url else "config.json"
    if storage.exists(beside):
        config = storage.read_json(beside)
        if config.get("architecture") == arch and isinstance(config.get("pretrained_cfg"), dict):
            cfg = {**config["pretrained_cfg"], "num_classes": config.get("num_classes")}
            return PretrainedWeights(url, arch, url, "file", url, cfg, beside)
    default = timm.models.get_pretrained_cfg(arch)
    cfg = default.to_dict() if default is not None else {}
    return PretrainedWeights(url, arch, url, "file", url, cfg, f"timm's default for {arch}")


def _repo_and_revision(location: str) -> tuple[str, str | None]:
    repo, _, revision = location.partition("@")
    return repo, revision or None


def _hub_filenames(weights: PretrainedWeights) -> list[str]:
    named = weights.cfg.get("hf_hub_filename")
    return [named] if named else HUB_WEIGHT_FILES


def _available(weights: PretrainedWeights) -> PretrainedWeights:
    """The weights are cached, or can be fetched; a ConfigError in one line otherwise. Nothing is downloaded."""
    what = f"pretrained weights '{weights.name}'"
    if weights.kind in ("timm", "hf-hub"):
        repo, revision = _repo_and_revision(weights.location)
        path = hub.hub_file(repo, _hub_filenames(weights), revision=revision, field=FIELD, what=what, download=False)
        return dataclasses.replace(weights, file=path)
    if weights.kind == "url":
        cached = _torch_hub_file(weights.location)
        if cached is None and (hub.offline() or not hub.reachable(weights.location)):
            raise ConfigError(
                f"{FIELD}: {what} ({weights.location}) are not in torch's hub cache and cannot be downloaded; "
                f"give a local file (model.pretrained: /path/to/model.safetensors)"
            )
        return dataclasses.replace(weights, file=cached)
    return weights


def _fetched(weights: PretrainedWeights) -> PretrainedWeights:
    """The weights with `file` set to a local copy, downloading them if they are not cached."""
    what = f"pretrained weights '{weights.name}'"
    if weights.kind in ("timm", "hf-hub"):
        repo, revision = _repo_and_revision(weights.location)
        path = hub.hub_file(repo, _hub_filenames(weights), revision=revision, field=FIELD, what=what)
        return dataclasses.replace(weights, file=path)
    if weights.kind == "url":
        checked = _available(weights)
        if checked.file is not None:
            return checked
        return dataclasses.replace(weights, file=_download_url(weights.location))
    return dataclasses.replace(weights, file=str(storage.local_copy(weights.location)))


def _torch_hub_file(url: str) -> str | None:
    import os

    import torch

    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url.split("?", 1)[0]))
    return path if os.path.isfile(path) else None


def _download_url(url: str) -> str:
    import os

    import torch

    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url.split("?", 1)[0]))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.hub.download_url_to_file(url, path, progress=True)
    return path


# --- data.mean / data.std / data.image_size: auto ------------------------------------------

AUTO_FIELDS = ("mean", "std", "image_size")


def auto_fields(config: PipelineConfig) -> list[str]:
    return [name for name in AUTO_FIELDS if getattr(config.data, name) == "auto"]


def inputs_from_cfg(cfg: dict[str, Any], channels: int) -> dict[str, Any]:
    """mean, std and image size as the weights were trained with; one channel gets the RGB averages.

    A 1-channel stem adapted by timm is the sum of the RGB filters, so a gray image
    normalised with the average statistics feeds it what an RGB image of equal
    channels normalised per channel would.
    """
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    mean = list(cfg.get("mean") or IMAGENET_DEFAULT_MEAN)
    std = list(cfg.get("std") or IMAGENET_DEFAULT_STD)
    if channels == 1:
        mean, std = [round(sum(mean) / len(mean), 6)], [round(sum(std) / len(std), 6)]
    size = cfg.get("input_size") or (3, 224, 224)
    return {"mean": mean, "std": std, "image_size": int(size[-1])}


def auto_inputs(config: PipelineConfig, family: ModelFamily) -> PipelineConfig:
    """`config` with every `auto` of data.mean/std/image_size replaced by the pretrained weights' value.

    Returned unchanged when nothing is `auto`; a ConfigError naming the field when the
    run has no pretrained weights to take the values from.
    """
    auto = auto_fields(config)
    if not auto:
        return config
    weights = describe_pretrained(family, config.model.variant, config.model.pretrained)
    if weights is None:
        raise ConfigError(
            f"data.{auto[0]}: auto takes the value from the pretrained weights' pretrained_cfg, but "
            f"model.pretrained is not set; give a value (e.g. data.{auto[0]}="
            f"{'32' if auto[0] == 'image_size' else '[0.5]'})"
        )
    values = inputs_from_cfg(weights.cfg, config.data.channels)
    data = config.data.model_copy(update={name: values[name] for name in auto})
    return config.model_copy(update={"data": data})


def hub_cached(name: str) -> bool:
    """Whether the Hugging Face cache holds the weights timm's registry calls `name` (no network)."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(name)
    except RuntimeError:
        return False
    if cfg is None or not cfg.hf_hub_id:
        return False
    repo, revision = _repo_and_revision(cfg.hf_hub_id)
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else HUB_WEIGHT_FILES
    return any(hub.cached_file(repo, n, revision) for n in names)
