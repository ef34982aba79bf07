"""The quick check of `graft run`: the lines `load_checked` prints for field and plugin-name mistakes, found
from the config models and the plugin index alone — without importing a plugin, torch or Prefect."""

import json
import os
import subprocess
import sys

import pytest

from graftflow.core import plugin_index
from graftflow.core.errors import ConfigError
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.quick_check import LABELS, quick_problems
from graftflow.core.validation import load_checked
from graftflow.pipelines.cli.plugins import listing_rows
from tests.support import DIGITS, ROOT


@pytest.fixture(scope="module")
def rows():
    return listing_rows(PluginHost())


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.family=resnt"],
        ["model.family=resnt", "finetune.lr=-1"],
        ["data.source={kind: sklearn-digitz}"],
        ["pretrain.pretext.name=simclear"],
        ["export.formats=[onnx, tflite]"],
    ],
)
def test_quick_lines_are_the_full_checks_lines(rows, overrides, tmp_path):
    overrides = [f"artifact_root={tmp_path}", *overrides]
    with pytest.raises(ConfigError) as full:
        load_checked(DIGITS, overrides, None)
    quick = quick_problems(DIGITS, overrides, lambda refs: rows)
    assert quick and quick == str(full.value).splitlines()


def test_without_a_misnamed_item_or_an_index_it_leaves_everything_to_the_full_check(rows, tmp_path):
    assert quick_problems(DIGITS, [f"artifact_root={tmp_path}"], lambda refs: rows) == []
    assert quick_problems(DIGITS, ["finetune.lr=-1"], lambda refs: rows) == []  # the full check may find more
    assert quick_problems(DIGITS, ["model.family=resnt"], lambda refs: None) == []  # cannot tell: the full check will


def test_the_labels_are_the_registries_labels():
    host = PluginHost()
    assert {r.kind: r.label for r in host.registries() if r.kind in LABELS} == LABELS


def test_a_typo_is_answered_without_importing_plugins_torch_or_prefect(tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("GRAFT_PLUGIN_INDEX", None)
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: typo\nmodel: {family: resnt, variant: tiny}\n")
    code = (
        "import json, sys; from graftflow.pipelines.cli import main; code = main(sys.argv[1:]); "
        "heavy = [m for m in ('prefect', 'timm', 'torch') if m in sys.modules]; "
        "print(json.dumps({'code': code, 'loaded': heavy}))"
    )

    def graft(*args):
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=env)
        return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr

    assert graft("plugins")[0]["code"] == 0  # a listing saves the index (so does every graft run that starts)
    assert plugin_index.index_dir(env).is_dir()
    result, err = graft("run", str(typo))
    assert result == {"code": 2, "loaded": []}
    assert err == "error: model.family: unknown model family 'resnt'; available: resnet, timm, vit\n"
