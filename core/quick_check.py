"""The checks a config gets before any plugin is imported: its fields, and the plugin items it names.

`load_checked` imports every plugin (and with them torch: seconds) before it can tell that
`model.family: resnt` names nothing. A name no plugin registers needs no plugin code to
find: it is checked against the plugin index (core/plugin_index.py), the listing saved by
the last discovery while no plugin changed. When the config names such an item, the
answer is that line, with the lines of every field pydantic rejects — the same lines
`load_checked` prints for them — without loading a plugin. The checks that need plugin
code (the parameters of the items it does name, variants, a model's dry run) are then
reported once the names are right: the one exception to "every problem at once", taken
for a typo to answer in well under a second. Without a misnamed item, or without an
index (nothing listed the plugins since they last changed), it says nothing and the full
check reports everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graftflow.core.config import PipelineConfig, apply_overrides, override_keys, parse_partial, read_yaml
from graftflow.core.config import resolve_paths as _resolve_paths
from graftflow.core.errors import ConfigError
from graftflow.core.validation import _under

# registry kind (as `graft plugins` lists it) → the label its lookup errors use (PluginHost's registries)
LABELS = {
    "model_family": "model family",
    "data_source": "data source",
    "pretext": "pretext task",
    "exporter": "exporter",
}


def quick_problems(path: str | Path, overrides: Sequence[str], index: Any) -> list[str]:
    """Problems found without plugin code; `index(refs)` gives the saved listing rows, or None."""
    try:
        data = read_yaml(path)
    except ConfigError as exc:
        return [str(exc)]
    found = apply_overrides(data, overrides)
    _resolve_paths(data, Path(path).parent, skip=override_keys(overrides))
    config, invalid, dropped = parse_partial(data)
    found += invalid
    rows = None if config is None else index(config.plugins)
    if rows is None:
        return []  # unparseable, or no index: the full check reports every problem
    names: dict[str, list[str]] = {}
    for row in rows:
        names.setdefault(row["kind"], []).append(row["name"])
    unknown = [p for p in _unknown_names(config, names) if not _under(p, dropped)]
    return list(dict.fromkeys(found + unknown)) if unknown else []


def _unknown_names(config: PipelineConfig, names: dict[str, list[str]]) -> list[str]:
    """The same lines the registries raise in `config_problems`, in its order."""
    named = [
        ("model_family", config.model.family, "model.family"),
        ("data_source", config.data.source.kind, "data.source.kind"),
    ]
    if config.pretrain.source is not None:
        named.append(("data_source", config.pretrain.source.kind, "pretrain.source.kind"))
    named.append(("pretext", config.pretrain.pretext.name, "pretrain.pretext"))
    named += [("exporter", fmt, f"export.formats[{i}]") for i, fmt in enumerate(config.export.formats)]
    problems = []
    for kind, name, field in named:
        known = names.get(kind, [])
        if name not in known:
            available = ", ".join(sorted(known)) or "none"
            problems.append(f"{field}: unknown {LABELS[kind]} '{name}'; available: {available}")
    return problems
