"""`graft plugins` from the plugin index: the same listing without importing the plugins (nor torch) while
nothing changed, and a fresh discovery as soon as a plugin's file changes."""

import json
import os
import subprocess
import sys

from tests.support import ROOT
from tests.test_plugin_manager import EXTERNAL_LOSS

LIST = (
    "import json, sys; from graftflow.pipelines.cli import main; main(['plugins', '--json']); "
    "print(json.dumps({'torch': 'torch' in sys.modules}), file=sys.stderr)"
)


def _listing(env: dict) -> tuple[list[dict], bool]:
    proc = subprocess.run(
        [sys.executable, "-c", LIST], capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), json.loads(proc.stderr.strip().splitlines()[-1])["torch"]


def test_the_index_answers_until_a_plugin_changes(tmp_path):
    plugin = tmp_path / "elsewhere" / "squared_loss.py"
    plugin.parent.mkdir()
    plugin.write_text(EXTERNAL_LOSS)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "GRAFT_PLUGINS": str(plugin)}

    first, imported = _listing(env)
    assert imported and any(r["name"] == "squared-error" for r in first)  # discovered: the plugins imported torch
    assert len(list((tmp_path / "cache" / "graftflow" / "plugin-index").glob("*.json"))) == 1

    again, imported = _listing(env)
    assert again == first and not imported  # the index: same rows, no plugin (nor torch) imported

    plugin.write_text(EXTERNAL_LOSS.replace('"squared-error"', '"squared-error-2"'))
    changed, imported = _listing(env)
    assert imported and any(r["name"] == "squared-error-2" for r in changed)
    assert not any(r["name"] == "squared-error" for r in changed)
