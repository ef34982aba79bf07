"""How a folder of images says what each image is: the layouts sources share.

- `folders`: class per sub-folder, `<root>/<class>/<image>`.
- `table`: a CSV or Parquet label table with an image column and a label
  column; several rows for one image form its label set (Severstal's
  `train.csv`: `ImageId, ClassId, EncodedPixels`). The target is
  `single` (one label per image), `multi` (the label set) or `any` (a binary
  has-any-label class, e.g. defect / no defect).
- `mask-folders`: an image folder and a mask-image folder with the same stems
  (segmentation; see `mask_folders`).

The folder may be local or at any fsspec URL. Every image is decoded once
before it is accepted: a missing or unreadable image is skipped or fails the
run (`on_bad_image`), and the counts and first names go into the report that
the store keeps (`data.report` in summary.json).
"""

from __future__ import annotations

import csv
import io
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from graftflow.core.data.mask_folders import MaskFoldersLayout, mask_folder_records
from graftflow.core.errors import DataError
from graftflow.core.lazy import lazy_module
from graftflow.core.specs import ImageRecord

fsspec = lazy_module("fsspec")  # imported when a folder is read: a source registers and checks params without it

log = logging.getLogger("graft.data")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FIRST_NAMES = 5  # bad images named in reports and errors


class FoldersLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["folders"] = "folders"
    root: str = Field("", description="Sub-folder (relative to the data) whose sub-folders are the classes.")


class TableLayout(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["table"] = "table"
    table: str = Field(description="CSV or Parquet label table, relative to the data (e.g. train.csv).")
    image_column: str = Field("image", description="Column naming the image file (relative to `images`).")
    label_column: str = Field("label", description="Column holding the label; several rows per image = a label set.")
    images: str = Field("", description="Folder (relative to the data) the image names are relative to.")
    image_suffix: str = Field("", description="Appended to every image name (for tables that list ids without .jpg).")
    target: Literal["single", "multi", "any", "mask"] = Field(
        "single",
        description="single: one label per image; multi: the label set; any: has-any-label binary; mask: a "
        "segmentation mask per class from the run-length-encoded `mask_column` (Severstal's EncodedPixels).",
    )
    mask_column: str | None = Field(
        None,
        description="target mask: the column of run-length-encoded masks (1-indexed starts, column-major, "
        "`start length ...`; Severstal: EncodedPixels).",
    )
    mask_classes: list[str] | None = Field(
        None, description="target mask: the classes, in mask-channel order (default: every label with a mask)."
    )
    require_column: str | None = Field(
        None, description="A row counts as a label only where this column is non-empty (Severstal: EncodedPixels)."
    )
    label_separator: str | None = Field(None, description="Split one label cell into several labels on this string.")
    unlisted: Literal["ignore", "include"] = Field(
        "ignore", description="Images in `images` the table never names: ignore them, or include them with no label."
    )
    positive: str = Field("positive", description="target any: the class of images with at least one label.")
    negative: str = Field("negative", description="target any: the class of images with no label.")


Layout = Annotated[FoldersLayout | TableLayout | MaskFoldersLayout, Field(discriminator="kind")]


class ImageSourceParams(BaseModel):
    """Parameters every image-folder source shares (folder, kaggle): layout, suffixes, bad images, archive cap."""

    model_config = ConfigDict(extra="forbid")
    layout: Layout = Field(
        default_factory=FoldersLayout, description="How labels are given: folders, table, mask-folders."
    )
    extensions: list[str] = Field(list(IMAGE_SUFFIXES), description="Image file suffixes to include.")
    on_bad_image: Literal["skip", "fail"] = Field(
        "fail", description="A missing or unreadable image: skip it (counted and named in the report) or fail."
    )
    max_extract_bytes: int = Field(64 * 2**30, gt=0, description="Refuse archives that would extract to more bytes.")


class Records:
    """An iterable of ImageRecords plus the `report` its source fills while it is read."""

    def __init__(
        self, produce: Callable[[dict[str, Any]], Iterator[ImageRecord]], report: dict[str, Any] | None = None
    ):
        self.report: dict[str, Any] = report if report is not None else {}
        self._produce = produce

    def __iter__(self) -> Iterator[ImageRecord]:
        return self._produce(self.report)


# --- images -------------------------------------------------------------------------


def check_image(data: bytes) -> tuple[int, int]:
    """(width, height) of an image that decodes completely; raises ValueError (with the reason) otherwise."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                size = im.size
                if im.format == "JPEG":
                    im.draft("L", (max(size[0] // 8, 1), max(size[1] // 8, 1)))  # reads every byte, decodes at 1/8
                im.load()
        return size
    except Exception as exc:  # PIL raises many kinds: UnidentifiedImageError, OSError (truncated), SyntaxError...
        raise ValueError(str(exc) or type(exc).__name__) from None


class BadImages:
    """Counts missing/unreadable images; with on_bad_image=fail the first one is an error."""

    def __init__(self, policy: str, report: dict[str, Any]):
        self.policy = policy
        self.report = report
        report.setdefault("bad_images", {"missing": 0, "unreadable": 0, "first": []})

    def __call__(self, kind: str, name: str, why: str) -> None:
        if self.policy == "fail":
            hint = "; set data.source.on_bad_image: skip to leave such images out"
            raise DataError(f"data.source: image '{name}' {why}{hint}")
        bad = self.report["bad_images"]
        bad[kind] += 1
        if len(bad["first"]) < FIRST_NAMES:
            bad["first"].append(name)

    def log(self) -> None:
        bad = self.report["bad_images"]
        total = bad["missing"] + bad["unreadable"]
        if total:
            log.warning(
                "data.source: skipped %d bad image(s) (%d missing, %d unreadable); first: %s",
                total,
                bad["missing"],
                bad["unreadable"],
                ", ".join(bad["first"]),
            )


def _read(fs: fsspec.AbstractFileSystem, path: str, name: str, bad: BadImages) -> bytes | None:
    try:
        data = fs.cat_file(path)
    except FileNotFoundError:
        bad("missing", name, "is missing")
        return None
    try:
        check_image(data)
    except ValueError as exc:
        bad("unreadable", name, f"cannot be read as an image ({exc})")
        return None
    return data


# --- listing --------------------------------------------------------------------------


def _join(root: str, rel: str) -> str:
    rel = rel.strip("/")
    return f"{root.rstrip('/')}/{rel}" if rel else root.rstrip("/") or "/"


def _relative_files(fs: fsspec.AbstractFileSystem, root: str) -> dict[str, str]:
    """Every visible file under root: relative posix path → full path (see `hidden`)."""
    base = root.rstrip("/")
    out = {}
    for path in fs.find(base):
        rel = path[len(base) + 1 :] if path.startswith(base + "/") else path
        if not any(hidden(part) for part in rel.split("/")):
            out[rel] = path
    return out


def hidden(name: str) -> bool:
    """What archivers and desktops add beside the images: `.DS_Store`, `._x.jpg`, `__MACOSX/`, `.git/`."""
    return name.startswith(".") or name == "__MACOSX" or name == "Thumbs.db"


MAX_STEPS = 3  # lone folders stepped into, at most: `data.zip` → `data/` → `images/`


def lone_folder(fs: fsspec.AbstractFileSystem, base: str) -> str | None:
    """The name of the only visible entry of `base` when it is a folder, else None."""
    try:
        entries = fs.ls(base.rstrip("/") or "/", detail=True)
    except FileNotFoundError:
        return None
    visible = [e for e in entries if not hidden(e["name"].rstrip("/").rsplit("/", 1)[-1])]
    if len(visible) != 1 or visible[0].get("type") != "directory":
        return None
    return visible[0]["name"].rstrip("/").rsplit("/", 1)[-1]


def _holds_class_folders(fs: fsspec.AbstractFileSystem, folder: str, suffixes: tuple[str, ...]) -> bool:
    """Sub-folders with images, and no images of its own: the folder a class-per-folder tree starts at."""
    files = _relative_files(fs, folder)
    return any("/" in rel and rel.lower().endswith(suffixes) for rel in files) and not any(
        "/" not in rel and rel.lower().endswith(suffixes) for rel in files
    )


def step_into_lone_folders(
    fs: fsspec.AbstractFileSystem, base: str, suffixes: tuple[str, ...], report: dict[str, Any]
) -> str:
    """`zip -r imgs.zip imgs` puts one folder at the top: the classes are one level down, so go there.

    Stepped while the folder holds nothing but one folder that itself holds class
    folders; a folder of images alone (one class) is not stepped into. The path
    walked is recorded in the report (`stepped_into`), which the dataset card shows.
    """
    walked = []
    for _ in range(MAX_STEPS):
        name = lone_folder(fs, base)
        if name is None or not _holds_class_folders(fs, _join(base, name), suffixes):
            break
        base = _join(base, name)
        walked.append(name)
    if walked:
        report["stepped_into"] = "/".join(walked)
        log.info(
            "data.source: the data holds one folder, '%s'; its sub-folders are the classes "
            "(set data.source.layout.root to choose another folder)",
            "/".join(walked),
        )
    return base


def listing(fs: fsspec.AbstractFileSystem, root: str) -> list[tuple[str, dict]]:
    """(relative path, info) of every file under root, sorted: what fingerprints hash."""
    base = root.rstrip("/")
    items = []
    for path, info in sorted(fs.find(base, detail=True).items()):
        items.append((path[len(base) + 1 :] if path.startswith(base + "/") else path, info))
    return items


def _safe_rel(name: str, field: str) -> str:
    clean = name.replace("\\", "/").strip()
    parts = [p for p in clean.split("/") if p not in ("", ".")]
    if clean.startswith("/") or ".." in parts:
        raise DataError(f"{field}: '{name}' must be a path inside the data, without '..'")
    return "/".join(parts)


# --- layouts ---------------------------------------------------------------------------


def records(
    fs: fsspec.AbstractFileSystem, root: str, params: dict[str, Any] | ImageSourceParams, where: str
) -> Records:
    """The ImageRecords of the folder at `root` under the layout in `params`; `where` names it in messages."""
    p = (
        params
        if isinstance(params, ImageSourceParams)
        else ImageSourceParams.model_validate({k: v for k, v in params.items() if k in ImageSourceParams.model_fields})
    )
    if isinstance(p.layout, TableLayout):
        return Records(lambda report: _table(fs, root, p, where, report))
    if isinstance(p.layout, MaskFoldersLayout):
        return Records(lambda report: mask_folder_records(fs, root, p, where, report))
    return Records(lambda report: _folders(fs, root, p, where, report))


def _folders(fs, root: str, p: ImageSourceParams, where: str, report: dict) -> Iterator[ImageRecord]:
    base = _join(root, _safe_rel(p.layout.root, "data.source.layout.root"))
    suffixes = tuple(s.lower() for s in p.extensions)
    if not fs.isdir(base):
        raise DataError(f"data.source.layout.root: '{p.layout.root}' is not a folder in {where}")
    base = step_into_lone_folders(fs, base, suffixes, report)
    files = [
        (rel, path)
        for rel, path in sorted(_relative_files(fs, base).items())
        if "/" in rel and rel.lower().endswith(suffixes)
    ]
    if not files:
        raise DataError(f"data.source: no images in class sub-folders of {where}")
    bad = BadImages(p.on_bad_image, report)
    report.update(layout="folders", listed=len(files))
    for rel, path in files:
        data = _read(fs, path, rel, bad)
        if data is not None:
            yield ImageRecord(image=data, label=rel.split("/", 1)[0], source=fs.unstrip_protocol(path))
    bad.log()


def read_table(fs: fsspec.AbstractFileSystem, path: str, name: str):
    """A CSV or Parquet file as a pyarrow Table with every column as strings."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    try:
        if name.lower().endswith((".parquet", ".pq")):
            table = pq.read_table(path, filesystem=fs)
            return pa.table({c: table[c].cast(pa.string()) for c in table.column_names})
        with fs.open(path, "rb") as f:
            header = next(csv.reader([f.readline().decode("utf-8-sig")]), [])
            f.seek(0)
            # Every column as text: ids such as "0123" keep their zeros, empty cells stay "".
            return pacsv.read_csv(
                f,
                convert_options=pacsv.ConvertOptions(
                    column_types={name: pa.string() for name in header}, strings_can_be_null=False
                ),
            )
    except FileNotFoundError:
        raise DataError(f"data.source.layout.table: '{name}' does not exist") from None
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise DataError(f"data.source.layout.table: '{name}' cannot be read: {str(exc).splitlines()[0]}") from None


def label_sets(table, layout: TableLayout) -> dict[str, list[str]]:
    """image name → its labels (in first-seen order, no repeats), from the rows of the table."""
    missing = [
        c
        for c in (layout.image_column, layout.label_column, layout.require_column)
        if c is not None and c not in table.column_names
    ]
    if missing:
        field = {layout.image_column: "image_column", layout.label_column: "label_column"}.get(
            missing[0], "require_column"
        )
        raise DataError(
            f"data.source.layout.{field}: column '{missing[0]}' is not in {layout.table}; "
            f"columns are {', '.join(table.column_names)}"
        )
    images = table[layout.image_column].to_pylist()
    labels = table[layout.label_column].to_pylist()
    required = table[layout.require_column].to_pylist() if layout.require_column else None
    sets: dict[str, list[str]] = {}
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        if image is None or not str(image).strip():
            raise DataError(f"data.source.layout.image_column: row {i + 2} of {layout.table} has no image name")
        current = sets.setdefault(str(image).strip(), [])
        if required is not None and (required[i] is None or not str(required[i]).strip()):
            continue
        if label is None or not str(label).strip():
            continue
        for one in str(label).split(layout.label_separator) if layout.label_separator else [str(label)]:
            one = one.strip()
            if one and one not in current:
                current.append(one)
    return sets


def mask_runs(table, layout: TableLayout) -> tuple[dict[str, dict[str, list[str]]], tuple[str, ...]]:
    """target mask: image → class → its RLE strings, and the mask classes in channel order."""
    column = layout.mask_column or layout.require_column
    if column is None:
        raise DataError("data.source.layout.mask_column: target mask needs the column of run-length-encoded masks")
    if column not in table.column_names:
        raise DataError(
            f"data.source.layout.mask_column: column '{column}' is not in {layout.table}; "
            f"columns are {', '.join(table.column_names)}"
        )
    runs: dict[str, dict[str, list[str]]] = {}
    for image, label, rle in zip(
        table[layout.image_column].to_pylist(),
        table[layout.label_column].to_pylist(),
        table[column].to_pylist(),
        strict=True,
    ):
        if rle and str(rle).strip() and label is not None and str(label).strip():
            runs.setdefault(str(image).strip(), {}).setdefault(str(label).strip(), []).append(str(rle))
    found = sorted({c for per in runs.values() for c in per}, key=_natural)
    classes = tuple(layout.mask_classes) if layout.mask_classes else tuple(found)
    unknown = [c for c in found if c not in classes]
    if unknown:
        raise DataError(f"data.source.layout.mask_classes: class '{unknown[0]}' has masks in {layout.table}")
    if not classes:
        raise DataError(f"data.source.layout.mask_column: no row of {layout.table} has a mask in '{column}'")
    return runs, classes


def mask_record(data: bytes, source: str, name: str, runs: dict[str, list[str]], classes) -> ImageRecord:
    """An image and its masks decoded from RLE at the image's own size (its header's width × height)."""
    from graftflow.core.data.masks import encode_mask, masks_from_rle

    width, height = check_image(data)
    masks = masks_from_rle(runs, classes, (height, width), f"data.source.layout.mask_column: image '{name}'")
    present = tuple(c for c, m in zip(classes, masks, strict=True) if m.any())
    return ImageRecord(
        image=data,
        label="|".join(present),
        source=source,
        labels=present,
        mask=encode_mask(masks),
        mask_classes=tuple(classes),
    )


def _table(fs, root: str, p: ImageSourceParams, where: str, report: dict) -> Iterator[ImageRecord]:
    layout: TableLayout = p.layout
    table_rel = _safe_rel(layout.table, "data.source.layout.table")
    lone = lone_folder(fs, root)
    if lone is not None and not fs.exists(_join(root, table_rel)) and fs.exists(_join(_join(root, lone), table_rel)):
        root = _join(root, lone)  # an archive of one folder that holds the table
        report["stepped_into"] = lone
        log.info(
            "data.source: the data holds one folder, '%s', with %s in it: reading it from there", lone, layout.table
        )
    table = read_table(fs, _join(root, table_rel), layout.table)
    sets = label_sets(table, layout)
    runs, mask_classes = mask_runs(table, layout) if layout.target == "mask" else ({}, ())
    images_root = _join(root, _safe_rel(layout.images, "data.source.layout.images"))
    if not fs.isdir(images_root):
        raise DataError(f"data.source.layout.images: '{layout.images}' is not a folder in {where}")
    on_disk = _relative_files(fs, images_root)
    names = {_safe_rel(n + layout.image_suffix, f"{layout.table}: image name"): labels for n, labels in sets.items()}
    if layout.unlisted == "include":
        suffixes = tuple(s.lower() for s in p.extensions)
        for rel in sorted(on_disk):
            if rel.lower().endswith(suffixes) and rel not in names:
                names[rel] = []
    bad = BadImages(p.on_bad_image, report)
    unlabelled: list[str] = []
    report.update(layout="table", target=layout.target, rows=table.num_rows, listed=len(names))
    for name, labels in names.items():
        if layout.target == "single":
            if len(labels) > 1:
                raise DataError(
                    f"data.source.layout.target: image '{name}' has labels {', '.join(labels)} in "
                    f"{layout.table}; use target: multi (label sets) or any (has any label)"
                )
            if not labels:
                unlabelled.append(name)
                continue
        path = on_disk.get(name)
        if path is None:
            bad("missing", name, f"is named in {layout.table} but not in '{layout.images or '.'}'")
            continue
        data = _read(fs, path, name, bad)
        if data is None:
            continue
        source = fs.unstrip_protocol(path)
        if layout.target == "single":
            yield ImageRecord(image=data, label=labels[0], source=source)
        elif layout.target == "any":
            yield ImageRecord(image=data, label=layout.positive if labels else layout.negative, source=source)
        elif layout.target == "mask":
            yield mask_record(data, source, name, runs.get(name.removesuffix(layout.image_suffix), {}), mask_classes)
        else:
            ordered = tuple(sorted(labels, key=_natural))
            yield ImageRecord(image=data, label="|".join(ordered), source=source, labels=ordered)
    if unlabelled:
        report["unlabelled_skipped"] = {"count": len(unlabelled), "first": unlabelled[:FIRST_NAMES]}
        log.warning(
            "data.source: %d image(s) have no label in %s and were left out (target single); first: %s",
            len(unlabelled),
            layout.table,
            ", ".join(unlabelled[:FIRST_NAMES]),
        )
    bad.log()


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
