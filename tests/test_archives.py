"""Safe extraction: every member checked first; hostile or corrupt archives leave nothing behind."""

import io
import os
import re
import tarfile
import zipfile

import pytest

from graftflow.core.data.archives import safe_extract
from graftflow.core.errors import DataError


def make_zip(path, members: dict[str, bytes], symlinks: dict[str, str] = ()):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in dict(symlinks).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return path


def make_tar(path, files: dict[str, bytes] = (), links: dict[str, tuple[bytes, str]] = (), mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        for name, data in dict(files).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (kind, target) in dict(links).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info)
    return path


def nothing_left(tmp_path, dest):
    assert not dest.exists()
    assert not [p for p in dest.parent.iterdir() if ".partial-" in p.name]
    assert not list(tmp_path.rglob("evil*"))


def test_zip_and_tar_extract_whole(tmp_path):
    files = {"train.csv": b"a,b\n1,2\n", "imgs/cat/1.png": b"x" * 100, "imgs/dog/2.png": b"y"}
    got = safe_extract(make_zip(tmp_path / "a.zip", files), tmp_path / "out-zip")
    assert sorted(got) == sorted(files)
    assert (tmp_path / "out-zip" / "imgs" / "cat" / "1.png").read_bytes() == b"x" * 100
    tar = make_tar(
        tmp_path / "a.tar.gz",
        files,
        links={"imgs/link.png": (tarfile.SYMTYPE, "dog/2.png"), "copy.png": (tarfile.LNKTYPE, "imgs/cat/1.png")},
    )
    safe_extract(tar, tmp_path / "out-tar")
    assert (tmp_path / "out-tar" / "imgs" / "link.png").read_bytes() == b"y"  # a link inside stays inside
    assert (tmp_path / "out-tar" / "copy.png").read_bytes() == b"x" * 100
    assert not (tmp_path / "out-tar" / "copy.png").is_symlink()


@pytest.mark.parametrize(
    "name, message",
    [
        ("../evil.txt", "points outside the extraction folder"),
        ("safe/../../evil.txt", "points outside the extraction folder"),
        ("/tmp/evil.txt", "has an absolute path"),
        ("C:/evil.txt", "has an absolute path"),
        ("..\\evil.txt", "points outside the extraction folder"),
    ],
)
def test_zip_slip_is_refused_before_anything_is_written(tmp_path, name, message):
    archive = make_zip(tmp_path / "slip.zip", {"ok/first.png": b"fine", name: b"pwned"})
    dest = tmp_path / "deep" / "out"
    with pytest.raises(DataError, match=f"archive slip.zip: member '{re.escape(name)}' {message}"):
        safe_extract(archive, dest)
    nothing_left(tmp_path, dest)


@pytest.mark.parametrize(
    "links, message",
    [
        ({"evil": (tarfile.SYMTYPE, "/etc")}, "link 'evil' -> '/etc' escapes"),
        ({"evil": (tarfile.SYMTYPE, "../../outside")}, "link 'evil' -> '../../outside' escapes"),
        ({"evil": (tarfile.LNKTYPE, "/etc/passwd")}, "link 'evil' -> '/etc/passwd' escapes"),
        ({"d/s": (tarfile.SYMTYPE, "sub"), "d/s/evil.png": (tarfile.REGTYPE, "")}, "written through link 'd/s'"),
    ],
)
def test_tar_links_escaping_are_refused(tmp_path, links, message):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tf:
        for name, (kind, target) in links.items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    dest = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        safe_extract(archive, dest)
    nothing_left(tmp_path, dest)


def test_zip_symlink_out_is_refused(tmp_path):
    archive = make_zip(tmp_path / "l.zip", {"a.png": b"a"}, symlinks={"evil": "../../etc/passwd"})
    with pytest.raises(DataError, match="link 'evil' -> '../../etc/passwd' escapes"):
        safe_extract(archive, tmp_path / "out")
    nothing_left(tmp_path, tmp_path / "out")


def test_devices_are_refused(tmp_path):
    archive = tmp_path / "dev.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("evil-null")
        info.type = tarfile.CHRTYPE
        tf.addfile(info)
    with pytest.raises(DataError, match="is a device or FIFO"):
        safe_extract(archive, tmp_path / "out")


def test_zip_bomb_is_refused_from_its_headers(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * (20 * 2**20))  # 20 MiB of zeros deflate ~1000×
    with pytest.raises(DataError, match="refusing a likely zip bomb"):
        safe_extract(archive, tmp_path / "out")
    nothing_left(tmp_path, tmp_path / "out")


def test_size_cap_counts_the_whole_archive(tmp_path):
    archive = make_zip(tmp_path / "big.zip", {f"{i}.bin": os.urandom(1000) for i in range(5)})
    with pytest.raises(DataError, match="would extract 5000 bytes, over the cap of 4000"):
        safe_extract(archive, tmp_path / "out", max_bytes=4000)
    assert safe_extract(archive, tmp_path / "out", max_bytes=5000)


def test_headers_that_lie_about_size_are_caught(tmp_path):
    archive = make_zip(tmp_path / "liar.zip", {"a.bin": os.urandom(3000)})
    raw = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.infolist()[0]
    # Shrink the declared size in the central directory: the member now claims 10 bytes.
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24 : central + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    assert info.file_size == 3000
    # Never more than the declared bytes are read, so the member fails its CRC instead of overflowing the cap.
    with pytest.raises(DataError, match="archive liar.zip is corrupt or unreadable: Bad CRC-32 for file 'a.bin'"):
        safe_extract(archive, tmp_path / "out")
    nothing_left(tmp_path, tmp_path / "out")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_corrupt_archives_are_one_clear_error(tmp_path, damage):
    good = make_zip(tmp_path / "good.zip", {f"img{i}.png": os.urandom(5000) for i in range(4)})
    data = good.read_bytes()
    bad = tmp_path / "bad.zip"
    if damage == "garbage":
        bad.write_bytes(b"this is not a zip file at all" * 10)
    elif damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    else:  # a flipped byte inside the first member's data: the CRC check fails
        raw = bytearray(data)
        raw[200] ^= 0xFF
        bad.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="archive bad.zip (is corrupt|cannot be extracted)"):
        safe_extract(bad, tmp_path / "out")
    nothing_left(tmp_path, tmp_path / "out")


def test_an_existing_destination_is_replaced_only_on_success(tmp_path):
    dest = tmp_path / "out"
    safe_extract(make_zip(tmp_path / "v1.zip", {"a.txt": b"v1"}), dest)
    with pytest.raises(DataError):
        safe_extract(make_zip(tmp_path / "evil.zip", {"b.txt": b"v2", "../evil.txt": b"x"}), dest)
    assert (dest / "a.txt").read_bytes() == b"v1"  # the old extraction is untouched
    safe_extract(make_zip(tmp_path / "v2.zip", {"b.txt": b"v2"}), dest)
    assert [p.name for p in dest.iterdir()] == ["b.txt"]


# --- archives as people make them: one folder at the top ----------------------------------------


def png(value: int) -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_tree(root, classes=("cat", "dog", "owl"), per_class=4):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(png(c * 60 + i * 5))


def zip_r(cwd, archive: str, folder: str) -> None:
    """`zip -r archive folder`, as a person types it: directory entries, then the files, one folder on top."""
    import shutil
    import subprocess

    if shutil.which("zip"):
        subprocess.run(["zip", "-qr", archive, folder], cwd=cwd, check=True)
        return
    with zipfile.ZipFile(cwd / archive, "w", zipfile.ZIP_DEFLATED) as zf:  # what zip -r writes, where zip is absent
        for path in sorted((cwd / folder).rglob("*")):
            zf.write(path, path.relative_to(cwd).as_posix() + ("/" if path.is_dir() else ""))


def acquire(tmp_path, source: dict):
    from graftflow.core.config import load_config
    from graftflow.core.plugin_manager import PluginHost
    from graftflow.core.runs import Run
    from graftflow.core.stages.base import execute_stage
    from tests.support import DIGITS

    config = load_config(DIGITS, [f"artifact_root={tmp_path / 'runs'}", f"data.cache_dir={tmp_path / 'ds'}"])
    config.data.source = source
    config.pretrain.enabled = False
    config.finetune.classes = None
    run = Run.open(config)
    execute_stage("acquire", config, run, PluginHost())
    return run.summary()["data"], (tmp_path / "runs" / config.name / run.run_id / "acquire" / "dataset_card.md")


@pytest.mark.parametrize("kind", ["zip -r", "tar czf", "a folder"])
def test_a_lone_top_level_folder_is_stepped_into_and_said_so_in_the_card(tmp_path, kind):
    image_tree(tmp_path / "imgs")
    (tmp_path / "imgs" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # what a Mac leaves beside the classes
    if kind == "zip -r":
        zip_r(tmp_path, "imgs.zip", "imgs")
        path = tmp_path / "imgs.zip"
    elif kind == "tar czf":
        with tarfile.open(tmp_path / "imgs.tar.gz", "w:gz") as tf:
            tf.add(tmp_path / "imgs", arcname="imgs")
        path = tmp_path / "imgs.tar.gz"
    else:
        (tmp_path / "outer").mkdir()
        os.rename(tmp_path / "imgs", tmp_path / "outer" / "imgs")  # a folder holding a single folder
        path = tmp_path / "outer"
    data, card = acquire(tmp_path, {"kind": "folder", "path": str(path)})
    assert data["class_names"] == ["cat", "dog", "owl"] and data["rows"] == 12
    assert data["report"]["stepped_into"] == "imgs"
    assert "it was stepped into: `imgs/`" in card.read_text()


def test_a_mac_zip_with_macosx_metadata_gets_the_right_classes(tmp_path):
    members = {f"imgs/{c}/{i}.png": png(k * 60 + i) for k, c in enumerate(("a", "b")) for i in range(3)}
    members |= {f"__MACOSX/imgs/{c}/._{i}.png": b"\0\5\26\7 AppleDouble" for c in ("a", "b") for i in range(3)}
    make_zip(tmp_path / "imgs.zip", members)
    data, _ = acquire(tmp_path, {"kind": "folder", "path": str(tmp_path / "imgs.zip")})
    assert data["class_names"] == ["a", "b"] and data["rows"] == 6


def test_one_class_after_acquire_is_an_error_naming_data_source_with_the_fix(tmp_path):
    from graftflow.core.errors import DataError

    (tmp_path / "pics" / "holiday").mkdir(parents=True)
    for i in range(5):
        (tmp_path / "pics" / "holiday" / f"{i}.png").write_bytes(png(i * 40))
    with pytest.raises(DataError) as err:  # a folder of images alone is not stepped into: it is one class
        acquire(tmp_path, {"kind": "folder", "path": str(tmp_path / "pics")})
    assert str(err.value) == (
        "data.source: the data has 1 class ('holiday', 5 images); finetune needs at least 2: class-per-folder data "
        "keeps each class in its own sub-folder (<path>/cat/..., <path>/dog/...); if they sit deeper, set "
        "data.source.layout: {kind: folders, root: FOLDER} to the folder that holds them"
    )
