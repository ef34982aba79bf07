"""Discovery, registries and the observer contract of the plugin core."""

import json
import sys
import textwrap

import pytest

from graftflow.core.errors import PluginError
from graftflow.core.plugin_manager import PluginHost
from tests.support import graft

EXTERNAL_LOSS = textwrap.dedent('''
    """A stranger's plugin: one file, only pluggy and core's public API."""
    import os
    import pluggy
    from torch import nn
    from graftflow.core import LossSpec

    hookimpl = pluggy.HookimplMarker("graft")
    __version__ = "0.3"

    class Squared(nn.Module):
        def forward(self, logits, target):
            onehot = nn.functional.one_hot(target, logits.shape[1]).float()
            return ((logits.softmax(1) - onehot) ** 2).sum(1).mean()

    def make():
        marker = os.environ.get("SQUARED_LOSS_MARKER")
        if marker:
            open(marker, "a").write("built\\n")
        return Squared()

    @hookimpl
    def graft_losses():
        return [LossSpec(name="squared-error", kind="classification", factory=make)]
''')


@pytest.fixture
def external_plugin(tmp_path):
    path = tmp_path / "elsewhere" / "squared_loss.py"
    path.parent.mkdir()
    path.write_text(EXTERNAL_LOSS)
    return path


def test_builtins_come_through_entry_points():
    host = PluginHost(env={})
    assert {"resnet", "vit"} <= set(host.families.names())
    assert "cross-entropy" in host.losses and "sklearn-digits" in host.sources and "folder" in host.sources
    assert "supervised" in host.pretexts
    assert {"torchscript", "onnx", "safetensors"} <= set(host.exporters.names())
    origins = {row["origin"] for row in host.listing()}
    assert origins == {"builtin"}


def test_env_plugin_file_is_registered_with_its_origin(external_plugin):
    host = PluginHost(env={"GRAFT_PLUGINS": str(external_plugin)})
    row = next(r for r in host.listing() if r["name"] == "squared-error")
    assert row == {
        "kind": "loss",
        "name": "squared-error",
        "plugin": "graft_plugin_squared_loss",
        "origin": "GRAFT_PLUGINS",
        "version": "0.3",
    }


def test_duplicate_name_names_both_plugins(tmp_path):
    clash = tmp_path / "clash.py"
    clash.write_text(
        textwrap.dedent("""
        import pluggy
        from torch import nn
        from graftflow.core import LossSpec
        hookimpl = pluggy.HookimplMarker("graft")
        @hookimpl
        def graft_losses():
            return [LossSpec(name="cross-entropy", kind="classification", factory=nn.CrossEntropyLoss)]
    """)
    )
    with pytest.raises(PluginError) as err:
        PluginHost(env={"GRAFT_PLUGINS": str(clash)})
    assert str(err.value) == (
        "loss 'cross-entropy' is registered twice: by plugin 'graftflow.plugins.losses.classification' "
        "and by plugin 'graft_plugin_clash'"
    )


def test_unknown_name_lists_available():
    host = PluginHost(env={})
    with pytest.raises(PluginError, match=r"model.family: unknown model family 'resnt'; available: .*resnet.*vit"):
        host.families.get("resnt", "model.family")


def test_bad_plugins_are_clear_errors(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_xyz\n")
    with pytest.raises(PluginError, match="GRAFT_PLUGINS: plugin '.*broken.py' failed to import: ModuleNotFoundError"):
        PluginHost(env={"GRAFT_PLUGINS": str(broken)})
    with pytest.raises(PluginError, match="plugin file 'nope.py' does not exist"):
        PluginHost(env={"GRAFT_PLUGINS": "nope.py"})
    typo = tmp_path / "typo.py"
    typo.write_text(
        "import pluggy\nhookimpl = pluggy.HookimplMarker('graft')\n@hookimpl\ndef graft_lossess():\n    return []\n"
    )
    with pytest.raises(PluginError, match="graft_lossess"):
        PluginHost(env={"GRAFT_PLUGINS": str(typo)})
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        "import pluggy\nhookimpl = pluggy.HookimplMarker('graft')\n"
        "@hookimpl\ndef graft_losses():\n    return ['not a spec']\n"
    )
    with pytest.raises(PluginError, match="returned str from graft_losses; expected LossSpec"):
        PluginHost(env={"GRAFT_PLUGINS": str(wrong)})


def test_failing_observer_is_logged_and_skipped(tmp_path, caplog):
    obs = tmp_path / "observers.py"
    obs.write_text(
        textwrap.dedent("""
        import pluggy
        hookimpl = pluggy.HookimplMarker("graft")
        seen = []
        class Bad:
            @hookimpl
            def graft_on_epoch_end(self, run, stage, epoch, metrics):
                raise RuntimeError("tracker down")
        class Good:
            @hookimpl
            def graft_on_epoch_end(self, stage, epoch):
                seen.append((stage, epoch))
        bad, good = Bad(), Good()
        @hookimpl
        def graft_on_stage_start(run, stage):
            seen.append(("start", stage))
    """)
    )
    host = PluginHost(env={"GRAFT_PLUGINS": str(obs)})
    import graft_plugin_observers as module

    host.add_observer(module.bad, name="bad-tracker")
    host.add_observer(module.good, name="good-tracker")
    host.epoch_ended(None, "finetune", 2, {"loss": 1.0})
    host.stage_started(None, "acquire")
    assert module.seen == [("finetune", 2), ("start", "acquire")]
    assert "observer plugin 'bad-tracker' failed in graft_on_epoch_end and was skipped" in caplog.text


def test_graft_plugins_cli_lists_every_item_as_json(external_plugin):
    proc = graft("plugins", "--json", env={"GRAFT_PLUGINS": str(external_plugin)})
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    kinds = {r["kind"] for r in rows}
    assert {"model_family", "loss", "data_source", "augmentation", "pretext", "exporter"} <= kinds
    assert any(r["name"] == "squared-error" and r["origin"] == "GRAFT_PLUGINS" for r in rows)
    table = graft("plugins", env={"GRAFT_PLUGINS": str(external_plugin)})
    assert "squared-error" in table.stdout and "GRAFT_PLUGINS" in table.stdout


def test_allow_and_deny_lists(external_plugin):
    host = PluginHost(env={"GRAFT_PLUGINS_DENY": "graftflow.plugins.models.vit"})
    assert "vit" not in host.families and "resnet" in host.families
    allow = {"GRAFT_PLUGINS_ALLOW": "plugins.*", "GRAFT_PLUGINS": str(external_plugin)}
    with pytest.raises(PluginError, match=r"GRAFT_PLUGINS: plugin '.*squared_loss.py' is not allowed here"):
        PluginHost(env=allow)
    ok = PluginHost(env={**allow, "GRAFT_PLUGINS_ALLOW": "plugins.*,squared_loss"})
    assert "squared-error" in ok.losses
    with pytest.raises(PluginError, match="plugins: plugin 'evil_module' is not allowed here"):
        PluginHost(config_plugins=["evil_module"], env={"GRAFT_PLUGINS_DENY": "evil_*"})


STRANGER = """
import os
from graftflow.core import LossSpec, hookimpl
from torch import nn

open(os.environ["STRANGER_IMPORTED"], "a").write("imported\\n")  # what any module-level code could do


@hookimpl
def graft_losses():
    return [LossSpec(name="stranger-loss", kind="classification", factory=nn.CrossEntropyLoss)]
"""


@pytest.fixture
def installed_stranger(tmp_path, monkeypatch):
    """A distribution on sys.path with a `graft.plugins` entry point, as `pip install` would leave it."""
    site = tmp_path / "site"
    (site / "stranger_dist-1.0.dist-info").mkdir(parents=True)
    (site / "stranger_dist-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: stranger-dist\nVersion: 1.0\n"
    )
    (site / "stranger_dist-1.0.dist-info" / "entry_points.txt").write_text(
        "[graft.plugins]\nstranger = stranger_graft_plugin\n"
    )
    (site / "stranger_graft_plugin.py").write_text(STRANGER)
    monkeypatch.syspath_prepend(str(site))
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("STRANGER_IMPORTED", str(marker))
    yield marker
    sys.modules.pop("stranger_graft_plugin", None)


@pytest.mark.parametrize("env", [{"GRAFT_PLUGINS_DENY": "stranger_*"}, {"GRAFT_PLUGINS_ALLOW": "graftflow.plugins.*"}])
def test_excluded_entry_points_are_never_imported(installed_stranger, env):
    host = PluginHost(env=env)
    assert "stranger-loss" not in host.losses and "cross-entropy" in host.losses
    assert not installed_stranger.exists() and "stranger_graft_plugin" not in sys.modules
    # the negative control: the same installation without the list is found and imported
    assert "stranger-loss" in PluginHost(env={}).losses
    assert installed_stranger.read_text() == "imported\n"


def test_a_plugin_written_for_another_contract_major_is_refused_by_name(tmp_path):
    from graftflow.core import CONTRACT_VERSION

    old = tmp_path / "old_plugin.py"
    old.write_text(
        "from graftflow.core import hookimpl\ngraft_contract = 1\n@hookimpl\ndef graft_losses():\n    return []\n"
    )
    with pytest.raises(
        PluginError,
        match=r"plugin 'graft_plugin_old_plugin' \(GRAFT_PLUGINS\) was written for plugin "
        rf"contract 1; this graftflow implements contract {CONTRACT_VERSION[0]}\.{CONTRACT_VERSION[1]}",
    ):
        PluginHost(env={"GRAFT_PLUGINS": str(old)})
    current = tmp_path / "current_plugin.py"
    current.write_text(
        f"from graftflow.core import hookimpl\ngraft_contract = {CONTRACT_VERSION[0]}\n"
        "@hookimpl\ndef graft_losses():\n    return []\n"
    )
    PluginHost(env={"GRAFT_PLUGINS": str(current)})  # the same major: accepted
