"""The Arrow store: every source normalised into Parquet shards.

Columns: `image` (encoded bytes), `label` (int32), `split`, `source` (original
path or URL), `sha256`. Class names and provenance live in the schema
metadata. A store's directory name is a hash of everything that determines
its content (source, its fingerprint, split options, format version), so an
unchanged acquire finds the finished store and reads nothing. A store is
finished when its `_SUCCESS` file exists; that file is written last.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from core import storage
from core.errors import DataError
from core.specs import ImageRecord

FORMAT_VERSION = 1
SHARD_ROWS = 4096
SUCCESS = "_SUCCESS"

SCHEMA = pa.schema([
    ("image", pa.binary()),
    ("label", pa.int32()),
    ("split", pa.string()),
    ("source", pa.string()),
    ("sha256", pa.string()),
])


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

    def as_summary(self) -> dict[str, Any]:
        return {
            "path": self.url, "rows": self.rows, "classes": len(self.class_names),
            "class_names": self.class_names, "class_counts": self.class_counts,
            "split_counts": self.split_counts, "duplicates_dropped": self.duplicates_dropped,
            "cache_hit": self.cache_hit,
        }


def read_info(url: str) -> StoreInfo:
    meta = storage.read_json(storage.join(url, SUCCESS))
    return StoreInfo(url=url, **{k: meta[k] for k in ("rows", "class_names", "class_counts", "split_counts",
                                                       "duplicates_dropped", "provenance")})


def is_complete(url: str) -> bool:
    return storage.exists(storage.join(url, SUCCESS))


def build_store(records: Iterable[ImageRecord], url: str, split: dict[str, Any],
                provenance: dict[str, Any], split_fn) -> StoreInfo:
    """Stream records into shards, assign splits, and mark the store complete.

    Written into a staging directory and published whole, so a crash leaves no
    store that looks finished.
    """
    staging = storage.local_staging_dir(url)
    try:
        raw_dir = staging / "_raw"
        raw_dir.mkdir()
        label_names: list[str] = []
        hashes: list[str] = []
        seen: set[str] = set()
        dropped = 0
        buffer: dict[str, list] = {"image": [], "label_name": [], "source": [], "sha256": []}
        shard_paths: list[Path] = []

        def flush() -> None:
            if not buffer["image"]:
                return
            path = raw_dir / f"raw-{len(shard_paths):05d}.parquet"
            pq.write_table(pa.table({
                "image": pa.array(buffer["image"], pa.binary()),
                "label_name": pa.array(buffer["label_name"], pa.string()),
                "source": pa.array(buffer["source"], pa.string()),
                "sha256": pa.array(buffer["sha256"], pa.string()),
            }), path)
            shard_paths.append(path)
            for values in buffer.values():
                values.clear()

        for rec in records:
            digest = hashlib.sha256(rec.image).hexdigest()
            if (digest, rec.label) in seen:
                dropped += 1
                continue
            seen.add((digest, rec.label))
            buffer["image"].append(rec.image)
            buffer["label_name"].append(str(rec.label))
            buffer["source"].append(rec.source)
            buffer["sha256"].append(digest)
            label_names.append(str(rec.label))
            hashes.append(digest)
            if len(buffer["image"]) >= SHARD_ROWS:
                flush()
        flush()

        if not label_names:
            raise DataError(f"data.source: the source yielded no images ({provenance.get('source', '?')})")
        class_names = sorted(set(label_names), key=natural_key)
        index = {name: i for i, name in enumerate(class_names)}
        labels = [index[n] for n in label_names]
        splits = split_fn(labels, hashes, split["val"], split["test"], split["seed"])

        offset = 0
        metadata = {b"graft.class_names": json.dumps(class_names).encode(),
                    b"graft.provenance": json.dumps(provenance, default=str).encode()}
        for i, raw in enumerate(shard_paths):
            table = pq.read_table(raw)
            n = table.num_rows
            out = pa.table({
                "image": table["image"],
                "label": pa.array(labels[offset:offset + n], pa.int32()),
                "split": pa.array(splits[offset:offset + n], pa.string()),
                "source": table["source"],
                "sha256": table["sha256"],
            }, schema=SCHEMA.with_metadata(metadata))
            pq.write_table(out, staging / f"part-{i:05d}.parquet")
            raw.unlink()
            offset += n
        raw_dir.rmdir()

        info = StoreInfo(
            url=url, rows=len(labels), class_names=class_names,
            class_counts={name: c for name, c in sorted(Counter(label_names).items(), key=lambda kv: natural_key(kv[0]))},
            split_counts=dict(Counter(splits)), duplicates_dropped=dropped, provenance=provenance,
        )
        storage.write_json(str(staging / SUCCESS), {
            "format": FORMAT_VERSION, "rows": info.rows, "class_names": class_names,
            "class_counts": info.class_counts, "split_counts": info.split_counts,
            "duplicates_dropped": dropped, "provenance": provenance,
        })
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
