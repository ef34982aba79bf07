"""Imports go one way: pipelines → core ← plugins; core has no Prefect import."""

import ast
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def test_import_linter_contracts_hold():
    exe = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_plugins_use_only_core_public_api():
    """A plugin imports `core`, never `core.<internal>` (specs come through `from graftflow.core import ...`)."""
    offenders = []
    for path in (ROOT / "plugins").rglob("*.py"):
        for name in _imports(path):
            if name.startswith("core.") or name.startswith("pipelines"):
                offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders, offenders


def test_core_never_imports_prefect_even_lazily():
    offenders = [f"{p.relative_to(ROOT)}: {n}" for p in (ROOT / "core").rglob("*.py") for n in _imports(p)
                 if n.split(".")[0] in ("prefect", "plugins", "pipelines")]
    assert not offenders, offenders
