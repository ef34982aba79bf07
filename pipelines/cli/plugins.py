"""`graft plugins`: every registered plugin item, with its origin and version; `-v` adds each
item's variants and parameters (with their defaults), from the specs and their params models."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

BUILTIN_PREFIX = "graftflow.plugins."


def register(sub: argparse._SubParsersAction) -> None:
    plugins = sub.add_parser("plugins", help="list every registered plugin item (-v: variants and parameters)")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument("--plugin", action="append", help="also load this plugin module or .py file")
    plugins.add_argument("-v", "--verbose", action="store_true", help="also each item's variants and parameters")
    plugins.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from graftflow.core import plugin_index

    # The listing comes from the plugin index while no plugin changed: no plugin (nor torch) is imported.
    rows = plugin_index.cached(args.plugin or (), lambda: discover(args.plugin or ()))
    if not args.verbose:
        rows = [{k: row[k] for k in ("kind", "name", "plugin", "origin", "version")} for row in rows]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    from rich.console import Console

    console = Console()
    console.print(_table(rows))
    if args.verbose:
        for row in rows:
            _print_details(console, row)
    return 0


def discover(refs) -> list[dict[str, Any]]:
    """Every row of the listing with its details (-v), from a fresh discovery of the plugins."""
    from graftflow.core.plugin_manager import PluginHost

    return listing_rows(PluginHost(refs))


def listing_rows(host) -> list[dict[str, Any]]:
    """What the plugin index keeps for a host: every row of the listing with its details."""
    rows = host.listing()
    details = item_details(host)
    for row in rows:
        row.update(details.get((row["kind"], row["name"]), {}))
    return json.loads(json.dumps(rows, default=str))  # as the index stores it: one form, cached or not


def short_plugin(name: str) -> str:
    """`graftflow.plugins.models.resnet` → `models.resnet`: a built-in's module, without the package."""
    return name.removeprefix(BUILTIN_PREFIX)


def _table(rows: list[dict[str, Any]]):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="graftflow plugins", caption="plugin: module (built-ins under graftflow.plugins.)")
    for col in ("kind", "name", "plugin", "origin"):
        table.add_column(col, overflow="fold")
    for row in rows:
        origin = row["origin"] if row["version"] in ("-", "") else f"{row['origin']} {row['version']}"
        table.add_row(*(escape(v) for v in (row["kind"], row["name"], short_plugin(row["plugin"]), origin)))
    return table


def item_details(host) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) → variants (name → description) and parameters (name, type, default, description)."""
    out = {}
    for registry in host.registries():
        for name, entry in registry.entries():
            spec = entry.spec
            detail: dict[str, Any] = {}
            if getattr(spec, "description", ""):
                detail["description"] = spec.description
            if getattr(spec, "variants", None):
                detail["variants"] = dict(spec.variants)
            model = getattr(spec, "params_model", None)
            if model is not None:
                detail["parameters"] = params_of(model)
            out[(registry.kind, name)] = detail
    return out


def params_of(model) -> list[dict[str, str]]:
    """A params model's fields: name, type, default (or "required") and description."""
    from pydantic_core import PydanticUndefined

    params = []
    for field, info in model.model_fields.items():
        if info.default_factory is not None:
            default = _shown(info.default_factory())
        elif info.default is PydanticUndefined:
            default = "required"
        else:
            default = _shown(info.default)
        params.append(
            {
                "name": field,
                "type": type_name(info.annotation),
                "default": default,
                "description": info.description or "",
            }
        )
    return params


def _shown(value: Any) -> str:
    from pydantic import BaseModel

    return repr(value.model_dump() if isinstance(value, BaseModel) else value)


def type_name(annotation: Any) -> str:
    """`int`, `list[str]`, `FoldersLayout | TableLayout`: without module paths."""
    if isinstance(annotation, type) and not getattr(annotation, "__args__", None):
        return annotation.__name__
    text = str(annotation).replace("NoneType", "None")
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", text)


def _print_details(console, row: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    if not (row.get("variants") or row.get("parameters")):
        return
    console.print()
    console.print(f"[bold]{escape(row['kind'])} {escape(row['name'])}[/bold]  {escape(row.get('description', ''))}")
    if row.get("variants"):
        table = Table(box=None, show_header=False, padding=(0, 1), title="variants", title_justify="left")
        table.add_column("variant", style="cyan", no_wrap=True)
        table.add_column("description", overflow="fold")
        for variant, description in row["variants"].items():
            table.add_row(escape(variant), escape(description))
        console.print(table)
    if row.get("parameters"):
        table = Table(box=None, show_header=False, padding=(0, 1), title="parameters", title_justify="left")
        table.add_column("name", style="cyan", overflow="fold")
        table.add_column("type = default", overflow="fold")
        table.add_column("description", overflow="fold", ratio=1)
        for p in row["parameters"]:
            table.add_row(escape(p["name"]), escape(f"{p['type']} = {p['default']}"), escape(p["description"]))
        console.print(table)
