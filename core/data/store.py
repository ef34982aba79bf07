"""The Arrow store: every source normalised into Parquet shards.

Columns: `image` (encoded bytes), `label` (int32), `split`, `source` (original
path or URL), `sha256`. Class names and provenance live in the schema
metadata. A multi-label store (`graft.target` = "multi" in the metadata,
`target` in `_SUCCESS`) has one more column, `labels` (list<int32>: the
image's label set, possibly empty), and holds -1 in `label`; its class names
are the individual labels, and its split is stratified by label set.

A store's directory name is a hash of everything that determines its content
(source, its fingerprint, split options, format version), so an unchanged acquire
finds the finished store and reads nothing. A store is finished when its
`_SUCCESS` file exists; that file is written last.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from graftflow.core import storage
from graftflow.core.errors import DataError
from graftflow.core.specs import ImageRecord

FORMAT_VERSION = 2  # 2: multi-label stores, image sizes and the source's report in _SUCCESS (and mask stores)
SHARD_ROWS = 4096
SUCCESS = "_SUCCESS"

SCHEMA = pa.schema(
    [
        ("image", pa.binary()),
        ("label", pa.int32()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("sha256", pa.string()),
    ]
)
MULTI_SCHEMA = SCHEMA.append(pa.field("labels", pa.list_(pa.int32())))
# a mask store: the label set (classes present) and the mask PNG (bit c = class c; graftflow.core.data.masks)
MASK_SCHEMA = MULTI_SCHEMA.append(pa.field("mask", pa.binary()))


def natural_key(name: str) -> list[Any]:
    """Sort "2" before "10": class folders are often numbered."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def store_key(parts: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class StoreInfo:
    url: str
    rows: int
    class_names: list[str]
    class_counts: dict[str, int]
    split_counts: dict[str, int]
    duplicates_dropped: int = 0
    cache_hit: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)
    target: str = "single"  # or "multi": labels in the `labels` column, `label` is -1; or "mask": also `mask`
    image_sizes: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)  # what the source said while it was read

    def as_summary(self) -> dict[str, Any]:
        return {
            "path": self.url,
            "rows": self.rows,
            "classes": len(self.class_names),
            "class_names": self.class_names,
            "class_counts": self.class_counts,
            "split_counts": self.split_counts,
            "duplicates_dropped": self.duplicates_dropped,
            "cache_hit": self.cache_hit,
            "target": self.target,
            "image_sizes": self.image_sizes,
            **({"report": self.report} if self.report else {}),
        }


def read_info(url: str) -> StoreInfo:
    meta = storage.read_json(storage.join(url, SUCCESS))
    return StoreInfo(
        url=url,
        **{
            k: meta[k]
            for k in ("rows", "class_names", "class_counts", "split_counts", "duplicates_dropped", "provenance")
        },
        **{k: meta[k] for k in ("target", "image_sizes", "report") if k in meta},
    )


class _Sizes:
    """Image sizes from the encoded headers (no decoding): min, max and the most common."""

    def __init__(self):
        self.counts: Counter = Counter()

    def add(self, data: bytes) -> None:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                self.counts[im.size] += 1
        except Exception:  # an undecodable image fails later, where it is decoded, with its index
            self.counts[("?", "?")] += 1

    def summary(self) -> dict[str, Any]:
        known = [s for s in self.counts if s != ("?", "?")]
        if not known:
            return {}
        return {
            "min": [min(w for w, _ in known), min(h for _, h in known)],
            "max": [max(w for w, _ in known), max(h for _, h in known)],
            "most_common": [[w, h, n] for (w, h), n in self.counts.most_common(5) if (w, h) != ("?", "?")],
            "distinct": len(known),
        }


def is_complete(url: str) -> bool:
    return storage.exists(storage.join(url, SUCCESS))


def build_store(
    records: Iterable[ImageRecord], url: str, split: dict[str, Any], provenance: dict[str, Any], split_fn
) -> StoreInfo:
    """Stream records into shards, assign splits, and mark the store complete.

    Written into a staging directory and published whole, so a crash leaves no
    store that looks finished.
    """
    staging = storage.local_staging_dir(url)
    try:
        raw_dir = staging / "_raw"
        raw_dir.mkdir()
        label_names: list[str] = []
        label_sets: list[tuple[str, ...]] = []  # multi-label stores only
        hashes: list[str] = []
        seen: set[tuple] = set()
        dropped = 0
        target: str | None = None
        sizes = _Sizes()
        buffer: dict[str, list] = {"image": [], "label_name": [], "source": [], "sha256": [], "mask": []}
        mask_classes: tuple[str, ...] | None = None
        shard_paths: list[Path] = []

        def flush() -> None:
            if not buffer["image"]:
                return
            path = raw_dir / f"raw-{len(shard_paths):05d}.parquet"
            pq.write_table(
                pa.table(
                    {
                        "image": pa.array(buffer["image"], pa.binary()),
                        "label_name": pa.array(buffer["label_name"], pa.string()),
                        "source": pa.array(buffer["source"], pa.string()),
                        "sha256": pa.array(buffer["sha256"], pa.string()),
                        "mask": pa.array(buffer["mask"], pa.binary()),
                    }
                ),
                path,
            )
            shard_paths.append(path)
            for values in buffer.values():
                values.clear()

        for rec in records:
            kind = "mask" if rec.mask is not None else "single" if rec.labels is None else "multi"
            if target is None:
                target = kind
                mask_classes = rec.mask_classes
            elif kind != target:
                raise DataError(
                    f"data.source: the source mixes {target} and {kind} targets "
                    f"(at {rec.source}); a store holds one kind"
                )
            if kind == "mask" and rec.mask_classes != mask_classes:
                raise DataError(f"data.source: the mask classes change at {rec.source}; a store holds one list")
            digest = hashlib.sha256(rec.image).hexdigest()
            identity = (digest, rec.label if rec.labels is None else tuple(rec.labels), rec.mask)
            if identity in seen:
                dropped += 1
                continue
            seen.add(identity)
            buffer["image"].append(rec.image)
            buffer["label_name"].append(str(rec.label))
            buffer["source"].append(rec.source)
            buffer["sha256"].append(digest)
            buffer["mask"].append(rec.mask)
            label_names.append(str(rec.label))
            if rec.labels is not None:
                label_sets.append(tuple(str(x) for x in rec.labels))
            hashes.append(digest)
            sizes.add(rec.image)
            if len(buffer["image"]) >= SHARD_ROWS:
                flush()
        flush()

        if not label_names:
            raise DataError(f"data.source: the source yielded no images ({provenance.get('source', '?')})")
        report = dict(getattr(records, "report", None) or {})
        multi = target in ("multi", "mask")
        if multi:
            class_names = (
                list(mask_classes) if target == "mask" else sorted({x for s in label_sets for x in s}, key=natural_key)
            )
            index = {name: i for i, name in enumerate(class_names)}
            label_ids = [[index[x] for x in s] for s in label_sets]
            # Stratify by label set: every combination is a stratum of its own.
            combos = {c: i for i, c in enumerate(sorted({tuple(s) for s in label_ids}))}
            labels = [-1] * len(label_ids)
            splits = split_fn([combos[tuple(s)] for s in label_ids], hashes, split["val"], split["test"], split["seed"])
            counts = Counter(x for s in label_sets for x in s)
            class_counts = {name: counts[name] for name in class_names}
            unlabelled = sum(1 for s in label_sets if not s)
            if unlabelled:
                report["empty_label_sets"] = unlabelled
        else:
            class_names = sorted(set(label_names), key=natural_key)
            index = {name: i for i, name in enumerate(class_names)}
            labels = [index[n] for n in label_names]
            splits = split_fn(labels, hashes, split["val"], split["test"], split["seed"])
            class_counts = {
                name: c for name, c in sorted(Counter(label_names).items(), key=lambda kv: natural_key(kv[0]))
            }

        offset = 0
        metadata = {
            b"graft.class_names": json.dumps(class_names).encode(),
            b"graft.provenance": json.dumps(provenance, default=str).encode(),
            b"graft.target": (target or "single").encode(),
        }
        for i, raw in enumerate(shard_paths):
            table = pq.read_table(raw)
            n = table.num_rows
            columns = {
                "image": table["image"],
                "label": pa.array(labels[offset : offset + n], pa.int32()),
                "split": pa.array(splits[offset : offset + n], pa.string()),
                "source": table["source"],
                "sha256": table["sha256"],
            }
            if multi:
                columns["labels"] = pa.array(label_ids[offset : offset + n], pa.list_(pa.int32()))
            if target == "mask":
                columns["mask"] = table["mask"]
            schema = {"mask": MASK_SCHEMA, "multi": MULTI_SCHEMA}.get(target or "single", SCHEMA)
            out = pa.table(columns, schema=schema.with_metadata(metadata))
            pq.write_table(out, staging / f"part-{i:05d}.parquet")
            raw.unlink()
            offset += n
        raw_dir.rmdir()

        info = StoreInfo(
            url=url,
            rows=len(labels),
            class_names=class_names,
            class_counts=class_counts,
            split_counts=dict(Counter(splits)),
            duplicates_dropped=dropped,
            provenance=provenance,
            target=target or "single",
            image_sizes=sizes.summary(),
            report=report,
        )
        storage.write_json(
            str(staging / SUCCESS),
            {
                "format": FORMAT_VERSION,
                "rows": info.rows,
                "class_names": class_names,
                "class_counts": info.class_counts,
                "split_counts": info.split_counts,
                "duplicates_dropped": dropped,
                "provenance": provenance,
                "target": info.target,
                "image_sizes": info.image_sizes,
                "report": report,
            },
        )
        storage.publish_dir(staging, url)
        return info
    except BaseException:
        storage.discard_dir(staging)
        raise


def read_table(url: str) -> pa.Table:
    """The whole store as one Arrow table, memory-mapped when local."""
    fs, path = storage.filesystem(url)
    files = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet"))
    if not files:
        raise DataError(f"{url}: the data store has no shards")
    if storage.is_local(url):
        tables = [pq.read_table(f, memory_map=True) for f in files]
    else:
        tables = [pq.read_table(f, filesystem=fs) for f in files]
    return pa.concat_tables(tables)
