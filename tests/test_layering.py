"""Imports go one way: pipelines → core ← plugins; core has no Prefect import; nothing uses the old top-level names."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

SOURCES = ("core", "plugins", "pipelines", "tests")


def test_import_linter_contracts_hold():
    """Between packages, and the layers inside core (stages → training, data → models → validation → config...)."""
    exe = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout
    assert "core layers" in proc.stdout and "KEPT" in proc.stdout


def test_ruff_lint_and_format_pass():
    """`make lint`'s ruff half: the configuration in pyproject.toml, on the whole tree."""
    ruff = Path(sys.executable).parent / "ruff"
    for args in (["check", "."], ["format", "--check", "."]):
        proc = subprocess.run([str(ruff), *args], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, f"ruff {' '.join(args)}:\n{proc.stdout}{proc.stderr}"


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_plugins_use_only_the_public_api():
    """A built-in plugin imports `graftflow.core`, never `graftflow.core.<internal>`, exactly as a stranger's must."""
    offenders = []
    for path in (ROOT / "plugins").rglob("*.py"):
        for name in _imports(path):
            if name.startswith("graftflow.core.") or name.startswith("graftflow.pipelines"):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders


def test_core_never_imports_prefect_even_lazily():
    offenders = [
        f"{p.relative_to(ROOT)}: {n}"
        for p in (ROOT / "core").rglob("*.py")
        for n in _imports(p)
        if n.split(".")[0] == "prefect" or n.startswith(("graftflow.plugins", "graftflow.pipelines"))
    ]
    assert not offenders, offenders


def test_nothing_imports_the_folders_by_their_old_top_level_names():
    """`core`, `plugins`, `pipelines` are folders, not packages: from the repo root they would import a second copy."""
    offenders = [
        f"{p.relative_to(ROOT)}: {n}"
        for folder in SOURCES
        for p in (ROOT / folder).rglob("*.py")
        for n in _imports(p)
        if n.split(".")[0] in ("core", "plugins", "pipelines")
    ]
    assert not offenders, offenders


def test_only_the_plugin_host_touches_pluggy_internals():
    """The host is a facade: no `.pm` / `_pm` / `.hook.` outside core/plugin_manager.py."""
    offenders = []
    for folder in ("core", "plugins", "pipelines"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "core" / "plugin_manager.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and node.attr in ("pm", "_pm", "hook"):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: .{node.attr}")
    assert not offenders, offenders
