"""Issue 13: the distribution installs one import package, `graftflow`; nothing named core/plugins/pipelines.

The fresh environment is a new venv whose site-packages holds only the built wheel; the heavy
dependencies (torch, prefect, ...) come from this test venv's site-packages through a `.pth`
line, which adds the folder but runs none of its `.pth` files (so the editable install of the
checkout stays out of it).
"""

import ast
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

from tests.support import ROOT


def test_every_package_folder_is_listed_in_pyproject():
    """A new sub-package must be listed, or a wheel would silently leave it out."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        "graftflow." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("core", "plugins", "pipelines")
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert listed == found


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("fresh")
    wheels = root / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wheel = next(wheels.glob("graftflow-*.whl"))
    venv = root / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    outside = root / "elsewhere"
    outside.mkdir()
    return python, site, outside


def run_python(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_installed_wheel_has_only_graftflow(fresh_env):
    python, site, outside = fresh_env
    top_level = {p.name for p in site.iterdir() if p.is_dir() and not p.name.endswith((".dist-info", "__pycache__"))}
    assert top_level == {"graftflow", "bin"}, top_level
    code = (
        "import importlib.util, graftflow.core, graftflow.plugins.models.resnet, graftflow.pipelines.cli\n"
        "print(graftflow.core.__file__)\n"
        "print([m for m in ('core', 'plugins', 'pipelines') if importlib.util.find_spec(m) is not None])"
    )
    proc = run_python(python, code, outside)
    assert proc.returncode == 0, proc.stderr
    location, importable = proc.stdout.splitlines()
    assert location.startswith(str(site)) and importable == "[]"


@pytest.mark.slow
def test_a_folder_named_core_does_not_change_what_graft_loads(fresh_env):
    python, site, outside = fresh_env
    project = outside / "project"
    for name in ("core", "plugins", "pipelines"):  # someone's own project: a Django app, a monorepo
        (project / name).mkdir(parents=True, exist_ok=True)
        (project / name / "__init__.py").write_text("raise ImportError('the user project, not graftflow')\n")
    code = (
        "import json, sys\n"
        "from graftflow.core.plugin_manager import PluginHost\n"
        "host = PluginHost(env={})\n"
        "print(json.dumps(sorted(host.families.names())))\n"
        "sys.argv = ['graft', 'plugins', '--json']\n"
        "from graftflow.pipelines.cli import main\n"
        "main()\n"
    )
    proc = run_python(python, code, project)  # the current folder, holding `core/`, is first on sys.path
    assert proc.returncode == 0, proc.stderr
    first, *rest = proc.stdout.splitlines()
    assert {"resnet", "vit"} <= set(ast.literal_eval(first))
    assert any('"name": "cross-entropy"' in line for line in rest)
