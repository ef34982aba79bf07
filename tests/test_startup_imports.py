"""Issue 19: a broken config is answered before torch (and Prefect, and its server) is ever loaded.

`graft run` checks every plugin name and parameter against the registered plugins, so
every built-in plugin must register and validate without its heavy imports; the slowest
of them took seconds (`tests/benchmarks/bench_startup.py` measures the wall). These tests
run the real CLI under `python -X importtime`, which lists every module the process
imported, and check both that every problem was printed and that none of the heavy
packages was among them.
"""

import json
import os
import subprocess
import sys

import pytest

from graftflow.core.config import PipelineConfig
from graftflow.core.plugin_manager import PluginHost
from graftflow.core.validation import config_problems, load_checked, method_traits, plugin_params
from tests.support import DIGITS, ROOT

HEAVY = ("torch", "torchvision", "timm", "segmentation_models_pytorch", "sklearn", "prefect", "pyarrow")

TYPO = "name: typo\nmodel: {family: resnt, variant: tiny}\n"
# Six plugin-level mistakes, each in another plugin: every one is a line of the answer.
SIX = """\
name: six
model: {family: resnt, variant: tiny}
data:
  source: {kind: folder, path: ./no-such-folder}
augment:
  train: [{name: horizontal-flip, p: 2}]
pretrain: {enabled: true, pretext: {name: simclr, proj_dim: -4}}
finetune:
  loss: {name: focal, gama: 2}
  method: {name: dann, weight: -1, target: {kind: sklearn-digits}}
export: {formats: [onnx, tflite]}
"""
SIX_LINES = [
    "error: model.family: unknown model family 'resnt'",
    "error: data.source.path: folder ",
    "error: augment.train[0].p: Input should be less than or equal to 1",
    "error: pretrain.pretext.proj_dim: Input should be greater than 0",
    "error: finetune.loss.gama: unknown field",
    "error: finetune.method.weight: Input should be greater than or equal to 0",
    "error: export.formats[1]: unknown exporter 'tflite'",
]


# The CLI's own entry point, with every module the process ever loaded written out at exit. `-X importtime`
# alone misses modules an editable install's finder loads (ours), and a plugin could import torch at exit.
RUN = (
    "import atexit, json, sys; "
    "atexit.register(lambda: open(sys.argv[1], 'w').write(json.dumps(sorted(sys.modules)))); "
    "from graftflow.pipelines.cli import main; sys.exit(main(sys.argv[2:]))"
)


def _graft_run_importtime(config_text: str, tmp_path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`graft run CONFIG` in a fresh interpreter under -X importtime: its result and every module it imported."""
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    loaded = tmp_path / "modules.json"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("PREFECT_API_URL", None)  # as a user's first `graft run`: the early server would start here
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", RUN, str(loaded), "run", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    return proc, modules | set(json.loads(loaded.read_text()))


def _errors(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY)


def test_a_typo_is_answered_without_torch_or_prefect(tmp_path):
    proc, modules = _graft_run_importtime(TYPO, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _errors(proc) == ["error: model.family: unknown model family 'resnt'; available: resnet, timm, vit"]
    assert "Traceback" not in proc.stderr
    assert "graftflow.plugins.losses.classification" in modules  # the plugins were loaded, and checked
    assert _heavy(modules) == []


def test_six_plugin_mistakes_are_all_answered_without_torch(tmp_path):
    proc, modules = _graft_run_importtime(SIX, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = _errors(proc)
    for expected in SIX_LINES:
        assert any(line.startswith(expected) for line in errors), (expected, errors)
    assert len(errors) == len(SIX_LINES), errors
    assert _heavy(modules) == []


def test_on_parsed_fires_only_for_a_config_that_checks(tmp_path):
    """`graft run` starts its Prefect server in `on_parsed`: never for a config with a mistake."""
    typo = tmp_path / "typo.yaml"
    typo.write_text(TYPO)
    seen = []
    with pytest.raises(Exception, match="resnt"):
        load_checked(typo, on_parsed=seen.append)
    assert seen == []
    with pytest.raises(Exception, match="finetune.lr"):
        load_checked(DIGITS, ["finetune.lr=-1"], on_parsed=seen.append)
    assert seen == []
    checked = load_checked(DIGITS, on_parsed=seen.append)
    assert [c.name for c in seen] == [checked.config.name]


def test_method_specs_declare_what_their_methods_say():
    """The spec's traits (read by the config check, which builds no method) agree with the built object's."""
    host = PluginHost(env={})
    target = {"target": {"kind": "sklearn-digits"}}
    for name, entry in host.methods.entries():
        spec = entry.spec
        try:
            params = plugin_params(spec, {}, "finetune.method")
        except Exception:
            params = plugin_params(spec, target, "finetune.method")
        built = spec.build(**params)
        config = PipelineConfig.model_validate({"finetune": {"method": {"name": name, **params}}})
        traits = method_traits(host, config)
        for trait in ("needs_target", "needs_features", "extends_head"):
            assert getattr(spec, trait) is not None, (name, trait)
            assert getattr(traits, trait) == bool(getattr(built, trait)), (name, trait)


def test_a_method_spec_written_before_2_5_is_built_to_read_its_needs(tmp_path):
    """A stranger's MethodSpec without the traits (None) still gets its config checked: the core builds it."""
    plugin = tmp_path / "old_method.py"
    plugin.write_text(
        "from graftflow.core import FinetuneMethod, MethodSpec, hookimpl\n\n\n"
        "class Extending(FinetuneMethod):\n"
        "    extends_head = True\n\n\n"
        "@hookimpl\n"
        "def graft_finetune_methods():\n"
        "    return [MethodSpec(name='old-style', build=lambda: Extending())]\n"
    )
    host = PluginHost([str(plugin)], env={})
    config = PipelineConfig.model_validate({"finetune": {"method": {"name": "old-style"}}})
    traits = method_traits(host, config)
    assert (traits.needs_target, traits.needs_features, traits.extends_head) == (False, False, True)
    problems = config_problems(config, host)
    assert any(p.startswith("finetune.head: method 'old-style' keeps the pretrained classes") for p in problems)
