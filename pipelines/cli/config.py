"""`graft config`: what a config may hold, and what a given one amounts to.

- `graft config --schema`: the JSON schema of the config (pydantic's), for editors and tools.
- `graft config --defaults`: a commented YAML of every field with its default and description,
  generated from the same models; it loads as the default config.
- `graft config CONFIG [--set ...]`: checks the file like `graft run` does (one line per
  problem, exit 2) and prints it with the defaults filled and relative paths resolved.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

import yaml

COMMENT_WIDTH = 96


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="the config's JSON schema or commented defaults, or check a config")
    parser.add_argument("config", nargs="?", help="a YAML config to check and print in full")
    parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field (repeatable)")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--schema", action="store_true", help="print the JSON schema of the config")
    shown.add_argument("--defaults", action="store_true", help="print every field with its default, as YAML")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from graftflow.core.config import PipelineConfig
    from graftflow.core.errors import ConfigError

    if args.schema:
        print(json.dumps(PipelineConfig.model_json_schema(), indent=2))
        return 0
    if args.defaults:
        print(defaults_yaml(), end="")
        return 0
    if not args.config:
        raise ConfigError("graft config: give a CONFIG to check, or --schema or --defaults")
    from graftflow.core.validation import load_checked

    config = load_checked(args.config, args.set or []).config
    print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True), end="")
    return 0


def defaults_yaml() -> str:
    """Every field of the config, its default and its description (as a comment above it)."""
    from graftflow.core.config import PipelineConfig

    lines = [
        "# graftflow: every config field with its default (`graft config --defaults`).",
        "# A config file needs only the fields it changes; `graft config --schema` gives the JSON schema.",
        "",
    ]
    lines += _model_lines(PipelineConfig(), 0)
    return "\n".join(lines) + "\n"


def _model_lines(model: Any, indent: int) -> list[str]:
    from pydantic import BaseModel

    from graftflow.core.config import PluginRef, SourceConfig

    pad = " " * indent
    lines: list[str] = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        lines += _comment(info.description, pad)
        if isinstance(value, (PluginRef, SourceConfig)):  # a plugin and its parameters: written flat, in one line
            lines.append(f"{pad}{name}: {_flow(value.model_dump(mode='json'))}")
        elif isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines += _model_lines(value, indent + 2)
        else:
            dumped = value.model_dump(mode="json") if isinstance(value, BaseModel) else _jsonable(value)
            lines.append(f"{pad}{name}: {_flow(dumped)}")
    return lines


def _jsonable(value: Any) -> Any:
    from pydantic import BaseModel

    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _flow(value: Any) -> str:
    """A value on one line, as YAML reads it back."""
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10**6, allow_unicode=True)
        .strip()
        .removesuffix("...")
        .strip()
    )


def _comment(text: str | None, pad: str) -> list[str]:
    if not text:
        return []
    return [f"{pad}# {line}" for line in textwrap.wrap(text, COMMENT_WIDTH - len(pad))]
