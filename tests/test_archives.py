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
    # Shrink the declared size in the central directory: the member now claims 10 bytes.
    central = raw.rfind(b"PK\x01\x02")
    raw[central + 24 : central + 28] = (10).to_bytes(4, "little")
    archive.write_bytes(bytes(raw))
    with zipfile.ZipFile(archive) as zf:
        assert [(i.filename, i.file_size) for i in zf.infolist()] == [("a.bin", 10)]  # the lie is what a reader sees
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
