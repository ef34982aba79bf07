"""Predictions written down: a CSV or Parquet file (by suffix, any fsspec URL) and a JSON record beside it.

The file holds one row per image (`Predictions.rows`); `<file>.json` says what made
it — model, engine, preprocessing, TTA views — and what was counted and skipped, so
a predictions file can always be traced back. Both are written to a temporary name
and moved into place, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from graftflow.core import storage
from graftflow.core.errors import ConfigError
from graftflow.core.inference.predictor import Predictions

FORMATS = (".csv", ".parquet")


def output_format(url: str, field: str = "--out") -> str:
    suffix = os.path.splitext(url.split("?", 1)[0])[1].lower()
    if suffix not in FORMATS:
        raise ConfigError(f"{field}: '{url}' must end in .csv or .parquet")
    return suffix


def record(predictions: Predictions, described: dict[str, Any], top_k: int) -> dict[str, Any]:
    """The JSON beside a predictions file (and the predict stage's summary)."""
    return {
        **described,
        "top_k": top_k,
        "images": len(predictions),
        "skipped": len(predictions.skipped),
        "skipped_first": [{"source": n, "why": w} for n, w in predictions.skipped[:5]],
        "class_counts": predictions.class_counts(),
    }


def write_predictions(predictions: Predictions, url: str, top_k: int, described: dict[str, Any]) -> dict[str, Any]:
    """Write the rows to `url` (.csv or .parquet) and the record to `url + '.json'`; returns the record."""
    fmt = output_format(url)
    rows = predictions.rows(top_k)
    data = csv_text(rows).encode() if fmt == ".csv" else _parquet(rows, predictions, described)
    _put(url, data)
    meta = record(predictions, described, top_k)
    storage.write_json(url + ".json", meta)
    return meta


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The rows as CSV (probabilities to 6 significant digits), what `graft predict` prints without --out."""
    buffer = io.StringIO()
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["source", "prediction", "probability"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def _parquet(rows: list[dict[str, Any]], predictions: Predictions, described: dict[str, Any]) -> bytes:
    import json

    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["source", "prediction", "probability"]
    table = pa.table({c: [row.get(c) for row in rows] for c in columns})
    table = table.replace_schema_metadata({"graftflow": json.dumps({**described, "classes": predictions.class_names})})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _put(url: str, data: bytes) -> None:
    fs, path = storage.filesystem(url)
    parent = os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    if isinstance(fs, LocalFileSystem):
        os.replace(tmp, path)
    else:
        fs.mv(tmp, path)
