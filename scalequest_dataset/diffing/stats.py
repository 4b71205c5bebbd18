"""Distributions of the rows a diff reads, side by side: string lengths (characters), numeric histograms
(difficulty, reward, ...) and category counts (generator, drop reason). A few numbers per row are kept,
never the rows. A and B share their histogram buckets, so a plot compares like with like."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BINS = 20


def numpy_of(arr: pa.Array) -> np.ndarray:
    """A boolean or numeric Array's values as numpy, read from its buffer: `to_numpy` goes through Arrow's pandas
    conversion, which imports pandas (~0.5 s of a diff). A null slot holds whatever its buffer holds: callers
    mask nulls themselves (or have none)."""
    t = arr.type
    data = arr.buffers()[1]
    if pa.types.is_boolean(t):
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little") if data is not None else None
        return (bits[arr.offset : arr.offset + len(arr)] if bits is not None else np.zeros(0, np.uint8)).astype(bool)
    if pa.types.is_floating(t) or pa.types.is_integer(t):
        kind = "f" if pa.types.is_floating(t) else "i" if pa.types.is_signed_integer(t) else "u"
        dtype = np.dtype(f"<{kind}{t.bit_width // 8}")
        return np.frombuffer(data, dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)
    return arr.to_numpy(zero_copy_only=False)


def arrow_indices(rows: np.ndarray) -> pa.Array:
    """Row numbers as an Arrow int64 array, from the numpy buffer (pa.array(numpy) imports pandas)."""
    values = np.ascontiguousarray(rows, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


# Every row's length in characters (0 where null) and which rows hold a value (None: every row does).
RowLengths = tuple[np.ndarray, np.ndarray | None]


def row_lengths(column: pa.Array) -> RowLengths:
    if pa.types.is_string_view(column.type):  # utf8_length has no kernel for views
        column = column.cast(pa.large_string())
    lengths = _ascii_lengths(column)
    if lengths is None:
        lengths = numpy_of(pc.utf8_length(column)).astype(np.int64)
    if not column.null_count:
        return lengths, None
    valid = numpy_of(column.is_valid())
    lengths[~valid] = 0  # a null slot's value is whatever its buffer holds
    return lengths, valid


def _ascii_lengths(column: pa.Array) -> np.ndarray | None:
    """Where every byte of the column's values is ASCII, a character is a byte: the lengths are the offsets'
    differences, found with one vectorised pass over the bytes instead of one per string. None otherwise."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return None
    if not len(column):
        return np.zeros(0, dtype=np.int64)
    _, offsets_buffer, data = column.buffers()
    width = np.dtype(np.int64 if pa.types.is_large_string(column.type) else np.int32)
    offsets = np.frombuffer(offsets_buffer, dtype=width, count=len(column) + 1, offset=column.offset * width.itemsize)
    if data is not None and offsets[-1] > offsets[0]:
        if np.frombuffer(data, dtype=np.uint8, count=int(offsets[-1] - offsets[0]), offset=int(offsets[0])).max() >= 0x80:
            return None
    return np.diff(offsets).astype(np.int64)


def _patched(known: RowLengths, column: pa.Array, changed: np.ndarray) -> RowLengths:
    """`known`, the lengths of a column whose cells equal `column`'s except in the `changed` rows: those rows are
    measured, the others are taken as they are (equal strings have equal lengths, a null stays a null)."""
    rows = np.flatnonzero(changed)
    if not len(rows):
        return known
    part_lengths, part_valid = row_lengths(column.take(arrow_indices(rows)))
    lengths, valid = known[0].copy(), known[1]
    lengths[rows] = part_lengths
    if valid is not None or part_valid is not None:
        valid = np.ones(len(lengths), dtype=bool) if valid is None else valid.copy()
        valid[rows] = True if part_valid is None else part_valid
    return lengths, valid


def column_kinds() -> dict[str, str]:
    """What each stage declares of the columns it adds (`Stage.statistics`): column -> number | unit | category |
    id. A text column not named is counted by length. Read without importing the stages (and `datasets`)."""
    from ..stages import declared_statistics

    kinds: dict[str, str] = {}
    for declared in declared_statistics().values():
        kinds.update(declared)
    return kinds


@functools.cache
def _columns(*kinds: str) -> frozenset[str]:
    return frozenset(c for c, k in column_kinds().items() if k in kinds)


class Distributions:
    def __init__(self) -> None:
        self.lengths: dict[str, list[np.ndarray]] = {}
        self.numbers: dict[str, list[np.ndarray]] = {}
        self.categories: dict[str, dict[str, int]] = {}

    def add(self, table: pa.Table, known: dict[str, RowLengths] | None = None,
            changed: dict[str, np.ndarray] | None = None) -> dict[str, RowLengths]:
        """Measure a table's rows; returns its text columns' lengths, row by row. `known` and `changed`: the
        lengths of another table's columns whose cells equal this table's, row for row, except where `changed`
        flags them (what the diff's comparison found): only those rows are measured again."""
        measured: dict[str, RowLengths] = {}
        for name, column in zip(table.schema.names, table.columns, strict=True):
            if pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            # an Array, not a ChunkedArray: ChunkedArray.to_numpy imports pandas (~0.5 s)
            column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
            if name in _columns("category"):
                counts = self.categories.setdefault(name, {})
                for item in pc.value_counts(column).to_pylist():
                    key = "null" if item["values"] is None else str(item["values"])
                    counts[key] = counts.get(key, 0) + item["counts"]
            elif _is_text(column.type) and name not in _columns("id"):
                if known is not None and changed is not None and name in known and name in changed:
                    lengths, valid = measured[name] = _patched(known[name], column, changed[name])
                else:
                    lengths, valid = measured[name] = row_lengths(column)
                self.lengths.setdefault(name, []).append(lengths if valid is None else lengths[valid])
            elif name in _columns("number", "unit") and (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
                values = numpy_of(pc.drop_null(column)).astype(float)
                self.numbers.setdefault(name, []).append(values[np.isfinite(values)])
        return measured

    def only(self, columns: frozenset[str]) -> Distributions:
        """These columns' numbers (shared, not copied)."""
        out = Distributions()
        out.lengths = {k: v for k, v in self.lengths.items() if k in columns}
        out.numbers = {k: v for k, v in self.numbers.items() if k in columns}
        out.categories = {k: dict(v) for k, v in self.categories.items() if k in columns}
        return out

    def merge(self, other: Distributions) -> None:
        """Another part's numbers after this one's (the order of the parts is the order of the rows)."""
        for name, parts in other.lengths.items():
            self.lengths.setdefault(name, []).extend(parts)
        for name, parts in other.numbers.items():
            self.numbers.setdefault(name, []).extend(parts)
        for name, counts in other.categories.items():
            mine = self.categories.setdefault(name, {})
            for key, n in counts.items():
                mine[key] = mine.get(key, 0) + n

    @staticmethod
    def summarise(a: Distributions, b: Distributions) -> dict[str, Any]:
        """Both sides, column by column; a column with no values on either side (all null) is left out. The
        histograms are computed on every core (numpy's sorting and counting release the interpreter): they end
        the diff, with nothing else left to overlap them."""
        # (key, kind, column, each side's values, histograms' options)
        jobs: list[tuple[str, str, str, dict[str, Any], dict[str, Any]]] = []
        for col in sorted(set(a.lengths) | set(b.lengths)):
            if any(len(v) for v in (*a.lengths.get(col, []), *b.lengths.get(col, []))):
                jobs.append((f"len({col})", "length", col, {"a": a.lengths.get(col), "b": b.lengths.get(col)},
                             {"quantiles": True}))
        for col in sorted(set(a.numbers) | set(b.numbers)):
            if any(len(v) for v in (*a.numbers.get(col, []), *b.numbers.get(col, []))):
                jobs.append((col, "number", col, {"a": a.numbers.get(col), "b": b.numbers.get(col)},
                             {"value_range": (0.0, 1.0) if col in _columns("unit") else None}))

        def one(job: tuple[str, str, str, dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
            _, kind, col, values, options = job
            return {"kind": kind, "column": col, **histograms(values, **options)}

        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
            out = {job[0]: found for job, found in zip(jobs, pool.map(one, jobs), strict=True)}
        for col in sorted(set(a.categories) | set(b.categories)):
            if set(a.categories.get(col, {})) | set(b.categories.get(col, {})) <= {"null"}:
                continue
            out[col] = {"kind": "category", "column": col,
                        **{s: dict(sorted(d.categories.get(col, {}).items())) for s, d in (("a", a), ("b", b))}}
        return out


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def histograms(chunks: dict[str, list[np.ndarray] | None], quantiles: bool = False, bins: int = BINS,
               value_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """Each side over the same buckets, with its count, mean and (for lengths) quantiles. The buckets span
    `value_range`, or the values seen (a single value gets a bucket centred on it)."""
    values = {s: np.concatenate(c) if c else np.array([]) for s, c in chunks.items()}
    both = np.concatenate(list(values.values()))
    lo, hi = value_range or ((float(both.min()), float(both.max())) if both.size else (0.0, 1.0))
    if value_range is not None and both.size:  # a value outside the expected range still gets a bucket
        lo, hi = min(lo, float(both.min())), max(hi, float(both.max()))
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    out: dict[str, Any] = {"edges": [round(float(e), 6) for e in edges]}
    for side, v in values.items():
        stats: dict[str, Any] = {"n": int(v.size), "histogram": np.histogram(v, edges)[0].tolist(),
                                 "mean": round(float(v.mean()), 6) if v.size else None}
        if quantiles and v.size:
            stats.update(zip(("p10", "p50", "p90"), (float(q) for q in np.percentile(v, [10, 50, 90])), strict=True))
        out[side] = stats
    return out
