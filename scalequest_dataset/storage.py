"""Deterministic Parquet shards, completion records and manifests, written atomically.

Same rows in, same bytes out: rows are sorted by id and the writer's options are pinned. The Features of
each stage travel in the file's `huggingface` metadata, so `datasets` reads back exactly the stage's types."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Pinned writer options: changing any of these moves bytes, so they are part of the format version.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "data_page_size": 1 << 20,
    "version": "2.6",
    "store_schema": True,
}
ROW_GROUP_SIZE = 10_000


def shard_name(split: str, index: int, total: int) -> str:
    """The Hub's own shard naming, so run directories publish without renaming."""
    return f"{split}-{index:05d}-of-{total:05d}.parquet"


def arrow_schema(features) -> pa.Schema:
    schema = features.arrow_schema
    meta = {b"huggingface": json.dumps({"info": {"features": features.to_dict()}}, sort_keys=True).encode()}
    return schema.with_metadata(meta)


def write_rows(path: Path, rows: list[dict[str, Any]], features) -> dict[str, Any]:
    """Write rows (sorted by id) to `path` atomically: temp file, fsync, rename. Returns rows and sha256."""
    rows = sorted(rows, key=lambda r: r["id"])
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate row ids in one shard")
    schema = arrow_schema(features)
    try:
        table = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"{path}: rows do not match the stage's features: {exc}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            # An empty shard gets no row group at all: `datasets` chokes on a row group of 0 rows.
            with pq.ParquetWriter(fh, schema, **PARQUET_OPTIONS) as writer:
                if table.num_rows:
                    writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return {"file": path.name, "rows": len(rows), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def iter_batches(paths: Iterable[Path], columns: list[str] | None = None, batch_size: int = 8192
                 ) -> Iterator[pa.RecordBatch]:
    """Stream record batches over shards in order: memory stays at one batch, not one stage."""
    for path in paths:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, data: Any) -> None:
    """Atomic JSON write (sorted keys, stable formatting)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
