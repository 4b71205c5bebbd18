"""Deterministic Parquet shards, content digests, and JSON written atomically (always UTF-8).

Same rows in, same bytes out: rows are sorted by id and the writer's options are pinned. The Features of each
stage travel in the file's `huggingface` metadata, so `datasets` reads back exactly the stage's types.

A shard has two identities. Its file sha256 covers every byte, and so also the Parquet writer's version and
the embedded metadata. Its content digest covers only its rows - the schema's names and logical types and
every value, in a canonical encoding of our own - so the same rows written by another pyarrow, with another
compression, or read back from a file, have the same content digest. Both are computed while the file is
written (the sha256 on the bytes as they go to disk, the content from the table in memory): no second read.

Every function takes a local Path or a `UrlPath` (a run directory on object storage): a local file is written to a
temporary sibling and renamed; an object is built in a local temporary file and uploaded whole (no rename)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .urlpath import UrlPath, spool

# Pinned writer options, as `datasets`' own ParquetWriter (the one `push_to_hub` uses) writes: a page index (readers
# skip pages by their min/max) and content-defined chunking (data pages cut where the values say, not every N bytes,
# so a v2 that changes 1 % of rows shares most pages with v1 byte for byte: the Hub's xet storage uploads and stores
# only the pages that changed). Both are pure functions of the rows, so the same rows still give the same bytes.
# We keep zstd where `datasets` uses snappy: smaller files, and pages are compressed one by one, so CDC still holds.
# Changing any of these moves bytes, not content: fingerprints and content digests stay, file sha256s move.
CDC_OPTIONS: dict[str, int] = {"min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024, "norm_level": 0}
HAS_CDC = int(pa.__version__.split(".")[0]) >= 21  # pyarrow 21 added content-defined chunking
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "write_page_index": True,
    "data_page_size": 1 << 20,
    "version": "2.6",
    "store_schema": True,
    **({"use_content_defined_chunking": CDC_OPTIONS} if HAS_CDC else {}),
}
# `datasets` sizes row groups to ~100 MB of Arrow data (config.MAX_ROW_GROUP_SIZE): a shard of short text rows is
# one row group, a shard of long ones several.
MAX_ROW_GROUP_BYTES = 100 * 10**6
CONTENT_VERSION = b"scalequest-content-v1"


def arrow_schema(features) -> pa.Schema:
    schema = features.arrow_schema
    meta = {b"huggingface": json.dumps({"info": {"features": features.to_dict()}}, sort_keys=True).encode()}
    return schema.with_metadata(meta)


def write_rows(path: Path | UrlPath, rows: list[dict[str, Any]], features) -> dict[str, Any]:
    """Write rows (sorted by id) to `path` atomically: temp file, fsync, rename. Returns what a FileRecord
    holds: file name, rows, bytes, sha256 of the file, content digest of the rows, the writer, the Arrow size."""
    rows = sorted(rows, key=lambda r: r["id"])
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate row ids in one shard")
    schema = arrow_schema(features)
    try:
        table = pa.Table.from_pylist(rows, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"{path}: rows do not match the stage's features: {exc}") from exc
    return write_table(path, table)


def write_table(path: Path | UrlPath, table: pa.Table) -> dict[str, Any]:
    # The content digest is computed on another thread while the file is written: both release the GIL
    # (hashlib on large buffers, Arrow's encoders and zstd), so on two cores it costs little wall time.
    table = table.combine_chunks()  # one chunk per column: the bytes never depend on how the rows were batched
    digest = _digests().submit(content_digest, table)
    if isinstance(path, UrlPath):  # built locally, then uploaded as one whole object
        fd, tmp = spool(".parquet")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            sink = _HashingFile(fh)
            # An empty shard gets no row group at all: `datasets` chokes on a row group of 0 rows.
            with pq.ParquetWriter(sink, table.schema, **PARQUET_OPTIONS) as writer:
                if table.num_rows:
                    writer.write_table(table, row_group_size=row_group_rows(table))
                if HAS_CDC:  # as `datasets` marks its files, so readers know how the pages were cut
                    writer.add_key_value_metadata({"content_defined_chunking": json.dumps(CDC_OPTIONS)})
            fh.flush()
            if not isinstance(path, UrlPath):
                os.fsync(fh.fileno())
        if isinstance(path, UrlPath):
            path.put(Path(tmp))
            Path(tmp).unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not isinstance(path, UrlPath):
        _fsync_dir(path.parent)
    return {"file": path.name, "rows": table.num_rows, "bytes": sink.size, "sha256": sink.hash.hexdigest(),
            "content": digest.result(), "writer": f"parquet-cpp-arrow version {pa.__version__}",
            "arrow_bytes": table.nbytes}


def row_group_rows(table: pa.Table) -> int:
    """Rows per row group: `datasets`' rule (~MAX_ROW_GROUP_BYTES of Arrow data per group) on a table already cut
    to one chunk per column, so its size counts each buffer once, whatever batches built it."""
    return max(1, table.num_rows * MAX_ROW_GROUP_BYTES // max(1, table.nbytes))


@functools.cache
def _digests() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="content-digest")


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes the bytes on their way to disk."""

    def __init__(self, fh) -> None:
        self.fh, self.hash, self.size = fh, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.fh.write(data)

    def tell(self) -> int:
        return self.size


def iter_batches(paths: Iterable[Path | UrlPath], columns: list[str] | None = None, batch_size: int = 8192
                 ) -> Iterator[pa.RecordBatch]:
    """Stream record batches over shards in order: memory stays at one batch, not one stage."""
    for path in paths:
        with _source(path) as src:
            yield from pq.ParquetFile(src).iter_batches(batch_size=batch_size, columns=columns)


def read_table(path: Path | UrlPath) -> pa.Table:
    with _source(path) as src:
        return pq.read_table(src)


def _source(path: Path | UrlPath):
    """What pyarrow reads: a local path itself, an object through its filesystem's (seekable) file."""
    return path.open("rb") if isinstance(path, UrlPath) else contextlib.nullcontext(path)


def _open(path: Path | UrlPath):
    return path.open("rb") if isinstance(path, UrlPath) else open(path, "rb")


def sha256_file(path: Path | UrlPath) -> str:
    h = hashlib.sha256()
    with _open(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stamp(path: Path | UrlPath) -> list[int] | None:
    """What says a local file is still the one written: size, mtime, ctime and inode (ctime moves on any write or
    rename onto it, and utime cannot set it back), as the model-identity memo keys its hashes. None for an object
    in a store (no inode, no ctime): it is hashed whenever it is read."""
    if isinstance(path, UrlPath):
        return None
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def unchanged(path: Path | UrlPath, recorded: list[int] | None) -> bool:
    """True if local `path` still has the stamp recorded when this run wrote it (False if none was recorded)."""
    try:
        return recorded is not None and stamp(path) == list(recorded)
    except OSError:
        return False


def file_problem(path: Path | UrlPath, sha256: str) -> str | None:
    """None if the file at `path` has this sha256; else what is wrong ("missing", or both digests), for the
    caller's message. The one place every boundary (plan, publish, load, diff, regenerate) checks bytes."""
    if not path.is_file():
        return "is missing"
    actual = sha256_file(path)
    return None if actual == sha256 else f"does not match its record: expected sha256 {sha256}, found {actual}"


# ---------------------------------------------------------------------------------------------- content


def content_digest(table: pa.Table) -> str:
    """sha256 of a canonical encoding of a table's rows: row count, then per column its name, its logical type
    (large and small variants, dictionary encoding and extension types count as their value type) and its
    values (validity bitmap, lengths of variable-size values, then the bytes; NaN has one bit pattern; -0.0 and
    0.0 differ). It ignores chunking, compression, Parquet encodings and schema metadata."""
    h = hashlib.sha256()
    h.update(CONTENT_VERSION + b"\0" + str(table.num_rows).encode() + b"\0")
    for field, column in zip(table.schema, table.columns, strict=True):
        h.update(f"{field.name}\0{canonical_type(field.type)}\0".encode())
        _feed(h, column.combine_chunks() if column.num_chunks != 1 else column.chunk(0))
    return "sha256:" + h.hexdigest()


def canonical_type(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return canonical_type(t.value_type)
    if isinstance(t, pa.ExtensionType):
        return canonical_type(t.storage_type)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return f"list<{canonical_type(t.value_type)}>"
    if pa.types.is_fixed_size_list(t):
        return f"fixed_size_list<{canonical_type(t.value_type)}>[{t.list_size}]"
    if pa.types.is_map(t):
        return f"map<{canonical_type(t.key_type)},{canonical_type(t.item_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ",".join(f"{f.name}:{canonical_type(f.type)}" for f in t) + ">"
    return str(t)


def _feed(h, arr: pa.Array) -> None:
    """Length and validity, then the values."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _feed(h, arr.dictionary_decode())
    if isinstance(t, pa.ExtensionType):
        return _feed(h, arr.storage)
    h.update(str(len(arr)).encode() + b"\0")
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        h.update(b"N" + np.packbits(valid, bitorder="little").tobytes())
    else:
        h.update(b"V")
    _feed_values(h, arr)


def _feed_values(h, arr: pa.Array) -> None:
    """The values of an array whose validity is already fed (a null slot's value counts as zero or empty)."""
    t = arr.type
    if pa.types.is_null(t):
        return
    if pa.types.is_boolean(t):
        h.update(arr.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8).tobytes())
    elif pa.types.is_floating(t):
        values = arr.fill_null(0).to_numpy(zero_copy_only=False)
        h.update(np.where(np.isnan(values), np.nan, values).astype(values.dtype.newbyteorder("<")).tobytes())
    elif pa.types.is_integer(t):
        values = arr.fill_null(0).to_numpy(zero_copy_only=False)
        h.update(values.astype(values.dtype.newbyteorder("<")).tobytes())
    elif pa.types.is_temporal(t):  # dates, times, timestamps, durations: their integer storage
        _feed_values(h, arr.view(pa.int32() if t.bit_width == 32 else pa.int64()))
    elif pa.types.is_decimal(t):
        _feed_values(h, arr.cast(pa.string()))
    elif (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
          or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t) or pa.types.is_string_view(t)
          or pa.types.is_binary_view(t)):
        values = arr.cast(pa.large_binary()).fill_null(b"")
        offsets = np.frombuffer(values.buffers()[1], dtype="<i8")[values.offset : values.offset + len(values) + 1]
        h.update(np.diff(offsets).astype("<i8").tobytes())
        data = values.buffers()[2]
        h.update(memoryview(data)[offsets[0] : offsets[-1]] if data is not None else b"")
    elif pa.types.is_struct(t):
        for field, child in zip(t, arr.flatten(), strict=True):
            h.update(f"{field.name}\0".encode())
            _feed(h, child)
    elif pa.types.is_map(t):  # as the list of its (key, value) entries
        mask = arr.is_null() if arr.null_count else None
        _feed_values(h, pa.ListArray.from_arrays(arr.offsets, arr.values, mask=mask))
    elif (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
          or pa.types.is_list_view(t) or pa.types.is_large_list_view(t)):
        lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
        h.update(lengths.astype("<i8").tobytes())
        _feed(h, arr.flatten())
    else:
        raise TypeError(f"no content digest for Arrow type {t}")


def file_content_digest(path: Path | UrlPath) -> str:
    """The content digest of a Parquet file's rows, as `write_rows` computed it."""
    return content_digest(read_table(path))


# ---------------------------------------------------------------------------------------------- JSON


def json_bytes(data: Any) -> bytes:
    """Sorted keys, stable formatting, UTF-8 whatever the locale (never \\u escapes)."""
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def write_json(path: Path | UrlPath, data: Any) -> None:
    """Atomic JSON write."""
    write_bytes(path, json_bytes(data))


def write_bytes(path: Path | UrlPath, blob: bytes) -> None:
    """Atomic write: a unique temporary sibling, fsync, rename (an object: one whole PUT). A reader never sees
    half a file."""
    if isinstance(path, UrlPath):
        path.write_bytes(blob)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path | UrlPath) -> Any:
    return json.loads(path.read_bytes().decode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
