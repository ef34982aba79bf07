"""Property: any set of independent mistakes in a config file, its `--set` values, `--stages` or
`--run-id` gives exit 2, exactly one `error:` line per mistake naming its field, no traceback,
and nothing written — before any work. The CLI's `main()` runs in-process (no subprocess per case).
"""

import contextlib
import copy
import io
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from graftflow.pipelines.cli import main
from tests.support import DIGITS

DEMO = yaml.safe_load(DIGITS.read_text())

# Text that is no registered plugin name (registered names are lowercase words with dashes).
unknown_name = st.text("QXZqxz_0123456789", min_size=3, max_size=8).map(lambda s: f"no_{s}")
broken_yaml = st.sampled_from(["[1e-4,", "[0.1, 0.2", "{a: 1", "[[", '"open', "{name: focal,"])
negative = st.floats(max_value=-1e-9, min_value=-1e6, allow_nan=False).map(lambda v: f"{v:g}")
not_number = st.sampled_from(["many", "three", "1e-3x", "abc", "--"])


def one(field: str, values: st.SearchStrategy[str], reported: str | None = None):
    """A mistake: `--set field=value`, reported on the line for `reported` (default: the field)."""
    return values.map(lambda v: (("--set", f"{field}={v}"), reported or field))


# Groups of mistakes on fields that do not interact; an example takes at most one from each group.
GROUPS = {
    "lr": st.one_of(
        one("finetune.lr", negative),
        one("finetune.lr", not_number),
        one("finetune.lr", broken_yaml),
        one("finetune.lr", st.just("[0.01, 0.001]")),
    ),
    "epochs": st.one_of(
        one("finetune.epochs", st.integers(-1000, -1).map(str)),
        one("finetune.epochs", not_number),
        one("finetune.epochs", broken_yaml),
    ),
    "pretrain_epochs": one("pretrain.epochs", st.integers(-50, -1).map(str)),
    "model": st.one_of(
        one("model.family", unknown_name),
        one("model.variant", unknown_name),
        one("model.drop_rate", st.sampled_from(["1.5", "-0.2", "x"])),
        # a size the family refuses: a micro ViT cuts 16 px and larger images into 4 px patches
        st.sampled_from([17, 18, 19, 21, 22]).map(
            lambda n: (
                ("--set", "model.family=vit", "--set", "model.variant=micro", "--set", f"data.image_size={n}"),
                "model.variant",
            )
        ),
    ),
    "channels": one("data.channels", st.sampled_from(["2", "4", "0", "rgb"])),
    # the demo has 1 channel; 2 values fit neither 1 nor 3 channels
    "mean": one("data.mean", st.sampled_from(["[0.5, 0.5]", "[0.1, 0.2, 0.3, 0.4]"])),
    "std": st.one_of(
        one("data.std", st.sampled_from(["[0]", "[-1]"]), "data.std[0]"),
        one("data.std", st.just("[0.5, 0.5]")),
    ),
    "size": one("data.image_size", st.sampled_from(["0", "-8", "big"])),
    "split": one("data.split.val", st.sampled_from(["1.5", "-0.1", "1"])),
    "device": one("device", st.sampled_from(["gpu", "cuda:x", "tpu", "CUDA"])),
    "precision": one("precision", st.sampled_from(["fp8", "half", "16"])),
    "seed": one("seed", not_number),
    "loss": st.one_of(
        one("finetune.loss.name", unknown_name),
        one("finetune.loss.label_smothing", st.just("0.1")),
        one("finetune.loss.label_smoothing", st.sampled_from(["-1", "2", "x"])),
    ),
    "pretext": one("pretrain.pretext.name", unknown_name, "pretrain.pretext"),
    "export": unknown_name.map(lambda n: (("--set", f"export.formats=[onnx, {n}]"), "export.formats[1]")),
    "augment": unknown_name.map(lambda n: (("--set", f"augment.train=[{n}]"), "augment.train[0].name")),
    "typo_top": st.sampled_from(["epochs", "learning_rate", "lr"]).map(lambda k: (("--set", f"{k}=3"), k)),
    "typo_section": st.sampled_from(["epoch", "lrs", "freeze"]).map(
        lambda k: (("--set", f"finetune.{k}=3"), f"finetune.{k}")
    ),
    "source": st.sampled_from(["/no/such/images", "/nonexistent/x.zip"]).map(
        lambda p: (("--set", f"data.source={{kind: folder, path: {p}}}"), "data.source.path")
    ),
    "warmup": one("finetune.warmup", st.sampled_from(["1", "1.5", "-0.5"])),
    "stages": unknown_name.map(lambda n: (("--stages", f"acquire,{n}"), "--stages")),
    "run_id": unknown_name.map(lambda n: (("--run-id", f"run-{n}"), "--run-id")),
}


def file_form(args: tuple[str, ...]) -> dict | None:
    """The same mistake written into the config file instead (None: it only exists on the command line)."""
    if args[0] != "--set":
        return None
    data: dict = {}
    for assignment in args[1::2]:  # ("--set", "a=1", "--set", "b=2")
        key, _, raw = assignment.partition("=")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            return None  # a value that is no YAML cannot be in a file that is
        node = data
        *sections, last = key.split(".")
        for part in sections:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


@st.composite
def mistakes(draw):
    """[(command-line args, file content or None, reported field)], and whether the file is no YAML at all."""
    names = draw(st.lists(st.sampled_from(sorted(GROUPS)), min_size=1, max_size=5, unique=True))
    chosen = []
    for name in names:
        args, field = draw(GROUPS[name])
        in_file = file_form(args)
        if in_file is not None and draw(st.booleans()):
            chosen.append(((), in_file, field))
        else:
            chosen.append((args, None, field))
    broken_file = draw(st.integers(0, 9)) == 0  # a file that is no YAML, now and then
    if broken_file:  # nothing in the file can be read: only that and --stages are reported
        chosen = [m for m in chosen if m[2] == "--stages"]
    return chosen, broken_file


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for every example: each must leave it exactly as it found it."""
    root = tmp_path_factory.mktemp("mistakes")
    (root / "broken.yaml").write_text("name: demo\nfinetune:\n  epochs: 3\n   lr: 0.1\n")
    (root / "case.yaml").write_text("")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRAFT_CACHE_DIR", str(root / "cache"))
        patch.chdir(root)  # a relative path written anywhere would land here
        yield root


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@settings(max_examples=500, deadline=None, database=None, derandomize=True)
@given(case=mistakes())
def test_broken_configs_give_one_line_per_problem_and_write_nothing(workdir, case):
    chosen, broken_file = case
    config = workdir / "broken.yaml" if broken_file else workdir / "case.yaml"
    if not broken_file:  # the demo config with the file-borne mistakes written into it
        data = copy.deepcopy(DEMO)
        for _, in_file, _ in chosen:
            merge(data, in_file or {})
        config.write_text(yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
    argv = ["run", str(config), "--set", f"artifact_root={workdir / 'runs'}"]
    for args, _, _ in chosen:
        argv += list(args)
    before = listing(workdir)
    code, out, err = run_cli(argv)
    lines = err.strip().splitlines()
    expected = sorted({field for _, _, field in chosen} | ({str(config)} if broken_file else set()))
    assert code == 2, (argv, err)
    assert "Traceback" not in out + err
    assert all(line.startswith("error: ") for line in lines), err
    assert len(lines) == len(expected), (argv, err)
    reported = sorted(line.removeprefix("error: ").split(":", 1)[0] for line in lines)
    assert reported == expected, (argv, err)
    assert listing(workdir) == before  # no run folder, no store, nothing half-written
