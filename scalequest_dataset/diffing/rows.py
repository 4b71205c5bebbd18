"""Exact comparison of one split of two versions, row by row, matched by id, streamed shard by shard.

What counts as a change (the same rule for every Arrow type, at any depth of nesting):
- null vs null is no change; null vs a value is a change;
- floats are compared by their IEEE-754 bits, so -0.0 vs 0.0 is a change (the bytes, and so the content
  digest, differ), except that every NaN equals every NaN (a NaN's payload carries no meaning);
- lists (and large, fixed-size and view lists) are equal when they have the same length and equal
  elements in order; maps are lists of (key, value) entries, so the order of entries counts; structs are
  equal when every field is equal; dictionary-encoded values are compared by what they decode to;
- a column whose type changed is reported as retyped in the schema. Its cells are compared after a
  lossless widening to a common type (int32 -> int64, float32 -> float64, string -> large_string,
  dictionary<string> -> string, list -> large_list, and so inside lists, maps and structs): a value that
  survives the widening unchanged is no change. Where there is no such common type (int vs string, int
  vs float, ...), every row not null on both sides is changed: its value is no longer the same kind.
- columns added or removed are schema changes; their cells are not counted as changed rows.

Memory: shards are read one group at a time per side (a group is one shard, or shards whose id ranges
overlap, which our own writer never produces), the next group decoded on a thread while this one is
compared. Ids must be unique within a split (the writer refuses duplicates)."""

from __future__ import annotations

import difflib
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .stats import Distributions, arrow_indices, numpy_of

ID = "id"


def is_lineage(column: str) -> bool:
    """A column naming where a row came from: its id and the ids it derives from (`question_id`, ...). Every
    stage's `origin` and `group_key` is one (tests/stages check it)."""
    return column == ID or column.endswith("_id")
SAMPLE_CHARS = 2_000  # a sample's strings are cut here (the html shows a word diff of what is kept)


# ---------------------------------------------------------------------------------------------- shards


@dataclass
class Shard:
    """A data file as its Parquet footer describes it (no data read)."""

    path: Path
    rows: int
    lo: Any  # smallest id, or a lower bound (from the footer's statistics)
    hi: Any
    schema: pa.Schema
    created_by: str
    meta: Any = field(default=None, repr=False)  # the footer (pq.FileMetaData)


def read_footer(path: Path) -> Shard:
    meta = pq.ParquetFile(path)
    schema = meta.schema_arrow
    if ID not in schema.names:
        raise ValueError(f"{path}: no {ID!r} column; rows are matched by id")
    lo, hi = _id_range_from_statistics(meta.metadata)
    if meta.metadata.num_rows and (lo is None or hi is None):  # no statistics: read the id column alone
        bounds = pc.min_max(meta.read(columns=[ID]).column(ID)).as_py()
        lo, hi = bounds["min"], bounds["max"]
    return Shard(Path(path), meta.metadata.num_rows, lo, hi, schema, meta.metadata.created_by or "", meta.metadata)


def _id_range_from_statistics(meta: pq.FileMetaData) -> tuple[Any, Any]:
    lo = hi = None
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        column = next((group.column(c) for c in range(group.num_columns) if group.column(c).path_in_schema == ID),
                      None)
        stats = column.statistics if column is not None else None
        if stats is None or not stats.has_min_max:
            return None, None
        lo = stats.min if lo is None else min(lo, stats.min)
        hi = stats.max if hi is None else max(hi, stats.max)
    return lo, hi


def id_ordered_groups(shards: list[Shard]) -> list[list[Shard]]:
    """Shards in id order, grouped where their id ranges overlap, so that the groups, each sorted by id,
    concatenate into one stream sorted by id. Our shards never overlap: every group is one shard."""
    groups: list[list[Shard]] = []
    top: Any = None
    for shard in sorted((s for s in shards if s.rows), key=lambda s: (s.lo, s.hi)):
        if groups and shard.lo <= top:
            groups[-1].append(shard)
            top = max(top, shard.hi)
        else:
            groups.append([shard])
            top = shard.hi
    return groups


Check = Callable[[Path, pa.Table], None]  # verifies a shard's decoded rows (raises), before they are compared


def _load(group: list[Shard], check: Check | None = None) -> tuple[pa.Table, Distributions]:
    """A group's table, sorted by id, each shard's rows checked first; and the group's distributions (measured
    here, on a loader thread, so the comparing thread only compares)."""
    table = _sorted_by_id(_read(group, check), group)
    dists = Distributions()
    dists.add(table)
    return table, dists


def _read(group: list[Shard], check: Check | None, columns: list[str] | None = None) -> pa.Table:
    # One thread per table: pyarrow's own pool on top of the loaders' costs several times the CPU (it spins). The
    # file reader itself, with the footer already parsed: pq.read_table goes through pyarrow.dataset (and imports
    # pandas, ~0.5 s).
    tables = [pq.ParquetFile(s.path, metadata=s.meta).read(columns=columns, use_threads=False) for s in group]
    for shard, t in zip(group, tables, strict=True):
        if check is not None:
            check(shard.path, t)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
    if ID in table.column_names and pa.types.is_dictionary(table.schema.field(ID).type):  # sorted, searched by value
        ids = table.column(ID)
        table = table.set_column(table.schema.get_field_index(ID), ID, ids.cast(ids.type.value_type))
    return table


def _sorted_by_id(table: pa.Table, group: list[Shard]) -> pa.Table:
    if table.num_rows < 2:
        return table
    ids = table.column(ID)
    if pc.all(pc.less(ids[:-1], ids[1:])).as_py():
        return table  # the writer's order: the usual case
    table = table.sort_by(ID)
    ids = table.column(ID)
    repeated = pc.equal(ids[:-1], ids[1:])
    if pc.any(repeated).as_py():
        first = ids[int(pc.index(repeated, True).as_py())].as_py()
        raise ValueError(f"id {first!r} occurs twice in {', '.join(str(s.path) for s in group)}")
    return table


def same_columns(a: Shard, b: Shard) -> frozenset[str]:
    """Columns whose values are the same, row for row, in two shards, told from their bytes without decoding: the
    files have the same Arrow schema and row groups, their `id` column chunks are byte-identical (the same ids in
    the same places), and so are the column's chunks. A deterministic writer writes the same values to the same
    bytes, and the same bytes decode to the same values; a column written otherwise is simply decoded."""
    ma, mb = a.meta, b.meta
    if (ma is None or mb is None or not a.schema.equals(b.schema) or ma.num_row_groups != mb.num_row_groups
            or ma.num_columns != mb.num_columns or any(ma.row_group(g).num_rows != mb.row_group(g).num_rows
                                                      for g in range(ma.num_row_groups))):
        return frozenset()
    leaves: dict[str, bool] = {}  # top-level column -> every leaf chunk identical
    with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
        for g in range(ma.num_row_groups):
            ga, gb = ma.row_group(g), mb.row_group(g)
            for c in range(ga.num_columns):
                ca, cb = ga.column(c), gb.column(c)
                top = ca.path_in_schema.split(".")[0]
                # chunks of other sizes differ: only chunks of one size are read (the changed ones seldom are)
                leaves[top] = leaves.get(top, True) and ca.path_in_schema == cb.path_in_schema and \
                    ca.total_compressed_size == cb.total_compressed_size and _chunk(fa, ca) == _chunk(fb, cb)
    return frozenset(name for name, same in leaves.items() if same) if leaves.get(ID) else frozenset()


def _chunk(fh, column) -> bytes:
    start = column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset
    return os.pread(fh.fileno(), column.total_compressed_size, start)


def _load_pair(a: Shard, b: Shard, checks: tuple[Check | None, Check | None]) -> Pair:
    """Two shards that cover the same ids, each read once; b's columns that are byte-identical to a's are taken
    from a's table, not decoded again (and not compared, nor measured twice). Where both hold the same ids in the
    same order (the usual case), the other columns are compared here, on the loader's thread, and b's lengths are
    a's but for the rows that differ."""
    same = same_columns(a, b)
    raw_a = _read([a], checks[0])
    own = [name for name in b.schema.names if name not in same]
    part = _read([b], None, own) if own and same else None
    raw_b = (pa.table({name: part.column(name) if name in own else raw_a.column(name) for name in b.schema.names},
                      schema=b.schema) if same else _read([b], None))
    if checks[1] is not None:
        checks[1](b.path, raw_b)
    ta, tb = _sorted_by_id(raw_a, [a]), _sorted_by_id(raw_b, [b])
    da, db = Distributions(), Distributions()
    lengths = da.add(ta)
    differs: dict[str, np.ndarray] | None = None
    if ta.column(ID).equals(tb.column(ID)):  # aligned row for row: compare here, measure b's changed rows only
        differs = {name: column_differs(ta.column(name), tb.column(name)) for name in own
                   if name != ID and name in ta.column_names}
        alike = {name: d for name, d in differs.items() if ta.schema.field(name).type == tb.schema.field(name).type}
        db.add(tb.select(own), known=lengths, changed=alike)
    else:
        db.add(tb.select(own))
    # sorted alike (their ids are the same, in the same places), so a's measures of the shared columns are b's
    db.merge(da.only(same))
    return Pair(ta, tb, da, db, same, differs)


@dataclass
class Pair:
    """Two tables of the same id range, their distributions, and what is known of their differences: `same`,
    columns with the same values row for row; `differs`, when the ids align row for row, each other column's
    changed rows."""

    a: pa.Table
    b: pa.Table
    dists_a: Distributions
    dists_b: Distributions
    same: frozenset[str]
    differs: dict[str, np.ndarray] | None


def _paired(groups_a: list[list[Shard]], groups_b: list[list[Shard]], pool: Executor,
            checks: tuple[Check | None, Check | None], dists: dict[str, Distributions], depth: int = 2
            ) -> Iterator[Pair]:
    """Aligned shard plans (one shard per group, the same id range on both sides, in order): each pair read as
    one job (`_load_pair`), the next `depth` pairs ahead on `pool`."""
    pending: deque[Future] = deque()
    for i in range(len(groups_a)):
        while len(pending) < depth and i + len(pending) < len(groups_a):
            j = i + len(pending)
            pending.append(pool.submit(_load_pair, groups_a[j][0], groups_b[j][0], checks))
        pair = pending.popleft().result()
        dists["a"].merge(pair.dists_a)
        dists["b"].merge(pair.dists_b)
        yield pair


def _aligned(groups_a: list[list[Shard]], groups_b: list[list[Shard]]) -> bool:
    return len(groups_a) == len(groups_b) and all(
        len(ga) == 1 and len(gb) == 1 and (ga[0].lo, ga[0].hi) == (gb[0].lo, gb[0].hi)
        for ga, gb in zip(groups_a, groups_b, strict=True))


def _prefetched(groups: list[list[Shard]], pool: Executor, check: Check | None, into: Distributions,
                depth: int = 2) -> Iterator[pa.Table]:
    """Each group's table in order, the next `depth` read (decoded, checked, measured) on `pool` while the caller
    compares this one. Their distributions are merged here, in order, so the report does not depend on timing."""
    pending: deque[Future] = deque()
    for i in range(len(groups)):
        while len(pending) < depth and i + len(pending) < len(groups):
            pending.append(pool.submit(_load, groups[i + len(pending)], check))
        table, dists = pending.popleft().result()
        into.merge(dists)
        yield table


def _count_up_to(ids: pa.ChunkedArray, last: Any) -> int:
    """How many of the sorted `ids` are <= `last` (a binary search: a handful of scalar reads)."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if ids[mid].as_py() <= last:
            lo = mid + 1
        else:
            hi = mid
    return lo


def matched_pairs(side_a: Iterator[pa.Table], side_b: Iterator[pa.Table], empty_a: pa.Table,
                  empty_b: pa.Table) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Merge two id-sorted streams into pairs of tables that cover the same id range: an id lies in at
    most one pair, on both sides of it. Aligned shard plans give one pair per shard, unsliced."""
    a, b = next(side_a, None), next(side_b, None)
    while a is not None or b is not None:
        if a is None or b is None:
            yield (empty_a, b) if a is None else (a, empty_b)
            a, b = (None, next(side_b, None)) if a is None else (next(side_a, None), None)
            continue
        last = min(a.column(ID)[-1].as_py(), b.column(ID)[-1].as_py())
        ka, kb = _count_up_to(a.column(ID), last), _count_up_to(b.column(ID), last)
        yield a.slice(0, ka), b.slice(0, kb)
        a = a.slice(ka) if ka < a.num_rows else next(side_a, None)
        b = b.slice(kb) if kb < b.num_rows else next(side_b, None)


# ---------------------------------------------------------------------------------------------- one split


@dataclass
class SplitComparison:
    schema: dict[str, Any]
    rows: dict[str, Any]
    stats: dict[str, Any]
    file_causes: list[str] = field(default_factory=list)  # why the files differ, when the rows do not
    flagged: pa.Table | None = None  # with `keep`: the lineage columns of every row added, removed or changed

    @property
    def differs(self) -> bool:
        r, s = self.rows, self.schema
        return bool(r["added"] or r["removed"] or r["changed"] or s.get("added") or s.get("removed")
                    or s.get("retyped"))


def compare_shards(paths_a: list[Path], paths_b: list[Path], sample: int = 5, max_ids: int = 100,
                   keep: bool = False, check_a: Check | None = None, check_b: Check | None = None
                   ) -> SplitComparison:
    """Compare the rows of two sets of shards (one split of one stage, on each side) by id.

    `check_a`/`check_b` see every shard's rows as decoded, before they are compared (the caller's verification:
    one decode serves both). `keep`: also return every added, removed or changed row's lineage (`id` and the
    other `*_id` columns: `SplitComparison.flagged`), for the diff's attribution of changes."""
    shards_a, shards_b = [read_footer(p) for p in paths_a], [read_footer(p) for p in paths_b]
    schema_a = shards_a[0].schema if shards_a else None
    schema_b = shards_b[0].schema if shards_b else None
    schema = schema_diff(schema_a, schema_b)
    # a column added or removed changes every row of the split, for the attribution (not for the row counts)
    rows = RowChanges(sample, max_ids, keep, every_row=bool(schema.get("added") or schema.get("removed")))
    dists = {"a": Distributions(), "b": Distributions()}
    # pyarrow decodes, hashlib hashes and numpy counts without the GIL: loaders on every core, comparing here
    groups_a, groups_b = id_ordered_groups(shards_a), id_ordered_groups(shards_b)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        if _aligned(groups_a, groups_b):  # the usual case: the same shard plan on both sides
            for pair in _paired(groups_a, groups_b, pool, (check_a, check_b), dists):
                rows.add(pair.a, pair.b, pair.same, pair.differs)
        else:
            side_a = _prefetched(groups_a, pool, check_a, dists["a"])
            side_b = _prefetched(groups_b, pool, check_b, dists["b"])
            for ta, tb in matched_pairs(side_a, side_b, _empty(schema_a), _empty(schema_b)):
                rows.add(ta, tb)
    return SplitComparison(schema, rows.result(), Distributions.summarise(dists["a"], dists["b"]),
                           file_causes(shards_a, shards_b), rows.flagged())


def _empty(schema: pa.Schema | None) -> pa.Table:
    return (schema or pa.schema([(ID, pa.string())])).empty_table()


def schema_diff(a: pa.Schema | None, b: pa.Schema | None) -> dict[str, Any]:
    if a is None or b is None:
        return {}
    ta = {f.name: str(f.type) for f in a}
    tb = {f.name: str(f.type) for f in b}
    return {"added": [c for c in tb if c not in ta], "removed": [c for c in ta if c not in tb],
            "retyped": [{"column": c, "a": ta[c], "b": tb[c]} for c in ta if c in tb and ta[c] != tb[c]]}


def file_causes(shards_a: list[Shard], shards_b: list[Shard]) -> list[str]:
    """Why files with the same rows differ in bytes, from their footers: the writer, the schema metadata."""
    causes = []
    writers_a, writers_b = sorted({s.created_by for s in shards_a}), sorted({s.created_by for s in shards_b})
    if writers_a != writers_b:
        causes.append(f"files written by {', '.join(writers_a)} vs {', '.join(writers_b)}")
    meta_a = {k: v for s in shards_a for k, v in (s.schema.metadata or {}).items()}
    meta_b = {k: v for s in shards_b for k, v in (s.schema.metadata or {}).items()}
    keys = sorted(k.decode(errors="replace") for k in set(meta_a) | set(meta_b) if meta_a.get(k) != meta_b.get(k))
    if keys:
        causes.append(f"the files' schema metadata differs: {', '.join(keys)}")
    return causes


# ---------------------------------------------------------------------------------------------- rows


class RowChanges:
    """Rows added, removed and changed (per column), accumulated over matched pairs of tables."""

    def __init__(self, sample: int, max_ids: int, keep: bool = False, every_row: bool = False) -> None:
        self.sample, self.max_ids = sample, max_ids
        self.keep, self.every_row = keep, every_row
        self._flagged: list[pa.Table] = []
        self.counts = {"added": 0, "removed": 0, "changed": 0, "compared": 0}
        self.by_column: dict[str, int] = {}
        self.ids: dict[str, list[Any]] = {"added_ids": [], "removed_ids": [], "changed_ids": []}
        self.samples: list[dict[str, Any]] = []

    def add(self, ta: pa.Table, tb: pa.Table, same: frozenset[str] = frozenset(),
            differs: dict[str, np.ndarray] | None = None) -> None:
        """`same`: columns known to hold the same values row for row (byte-identical chunks): not compared.
        `differs`: where the ids align row for row, the other columns' changed rows, already compared."""
        ids_a, ids_b = ta.column(ID), tb.column(ID)
        if self.every_row:
            self._flag(ta)
            self._flag(tb)
        if not ids_a.equals(ids_b):
            in_b, in_a = pc.is_in(ids_a, value_set=ids_b), pc.is_in(ids_b, value_set=ids_a)
            self._note("removed", ids_a.filter(pc.invert(in_b)))
            self._note("added", ids_b.filter(pc.invert(in_a)))
            if not self.every_row:
                self._flag(ta.filter(pc.invert(in_b)))
                self._flag(tb.filter(pc.invert(in_a)))
            ta, tb = ta.filter(in_b), tb.filter(in_a)  # both still sorted by id: they now align
        self.counts["compared"] += ta.num_rows
        if not ta.num_rows:
            return
        changed_in: dict[str, np.ndarray] = {}
        for name in ta.column_names:
            if name != ID and name in tb.column_names and name not in same:
                flags = differs[name] if differs is not None else column_differs(ta.column(name), tb.column(name))
                if flags.any():
                    changed_in[name] = flags
                    self.by_column[name] = self.by_column.get(name, 0) + int(flags.sum())
        if not changed_in:
            return
        changed = np.logical_or.reduce(list(changed_in.values()))
        rows = np.flatnonzero(changed)
        if not self.every_row:
            self._flag(ta.take(arrow_indices(rows)))
        self._note("changed", ta.column(ID).take(arrow_indices(rows[: self.max_ids])), len(rows))
        for i in rows[: max(0, self.sample - len(self.samples))]:
            self.samples.append(_sample(ta, tb, int(i), [c for c, d in changed_in.items() if d[i]]))

    def _note(self, kind: str, ids: pa.ChunkedArray | pa.Array, count: int | None = None) -> None:
        self.counts[kind] += len(ids) if count is None else count
        kept = self.ids[f"{kind}_ids"]
        if len(kept) < self.max_ids:
            kept.extend(ids.slice(0, self.max_ids - len(kept)).to_pylist())

    def _flag(self, table: pa.Table) -> None:
        if self.keep and table.num_rows:
            self._flagged.append(table.select([c for c in table.column_names if is_lineage(c)]))

    def flagged(self) -> pa.Table | None:
        if not self.keep:
            return None
        if not self._flagged:
            return pa.table({ID: pa.array([], pa.string())})
        return pa.concat_tables(self._flagged, promote_options="permissive")

    def result(self) -> dict[str, Any]:
        return {**self.counts, "changed_by_column": dict(sorted(self.by_column.items())), **self.ids,
                "samples": self.samples}


def _sample(ta: pa.Table, tb: pa.Table, i: int, columns: list[str]) -> dict[str, Any]:
    changes = []
    for col in columns:
        va, vb = ta.column(col)[i].as_py(), tb.column(col)[i].as_py()
        text = ""
        if isinstance(va, str) and isinstance(vb, str):
            text = "\n".join(difflib.unified_diff(va.splitlines(), vb.splitlines(), "a", "b", lineterm="", n=1))
        changes.append({"column": col, "a": plain(va), "b": plain(vb), "diff": text})
    return {"id": ta.column(ID)[i].as_py(), "changes": changes}


def plain(value: Any, limit: int = SAMPLE_CHARS) -> Any:
    """A cell as JSON can hold it: long strings cut, NaN and infinities as text, bytes and dates as text."""
    if isinstance(value, str):
        return value[:limit] + "..." if len(value) > limit else value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, limit) for v in value]
    return repr(value) if isinstance(value, bytes) else str(value)


# ---------------------------------------------------------------------------------------------- cells


def column_differs(a: pa.ChunkedArray | pa.Array, b: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Per row, whether the cell changed (see the module's rules). `a` and `b` are aligned by id."""
    a, b = _array(a), _array(b)
    if a.type != b.type:
        common = common_type(a.type, b.type)
        try:
            if common is None:
                raise pa.ArrowInvalid("no common type")
            a, b = a.cast(common), b.cast(common)  # safe casts: a lossy one raises
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return _valid(a) | _valid(b)  # another kind of value: changed unless null on both sides
    return _differs(a, b)


def _array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.Array):
        return column
    if pa.types.is_dictionary(column.type):  # chunks may carry different dictionaries
        column = column.cast(column.type.value_type)
    # One chunk (a shard of one row group) is used as it is: combine_chunks would copy it.
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def common_type(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type both widen to without changing a value, or None when they hold different kinds of value."""
    wa, wb = widened(a), widened(b)
    return wa if wa == wb else None


def widened(t: pa.DataType) -> pa.DataType:
    """The widest type of the same kind: what a value of `t` keeps when the column is widened or re-encoded."""
    if pa.types.is_dictionary(t):
        return widened(t.value_type)
    if isinstance(t, pa.ExtensionType):
        return widened(t.storage_type)
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t):
        return pa.float64()
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.large_binary()
    if pa.types.is_map(t):
        return pa.map_(widened(t.key_type), widened(t.item_type))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(widened(t.value_type), t.list_size)
    if _is_list(t):
        return pa.large_list(widened(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, widened(f.type)) for f in t])
    if pa.types.is_timestamp(t):
        return pa.timestamp("ns", t.tz)
    if pa.types.is_time(t):
        return pa.time64("ns")
    if pa.types.is_duration(t):
        return pa.duration("ns")
    if pa.types.is_date(t):
        return pa.date64()
    return t


def _is_list(t: pa.DataType) -> bool:
    return (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t)
            or pa.types.is_large_list_view(t) or pa.types.is_fixed_size_list(t))


def _valid(a: pa.Array) -> np.ndarray:
    if pa.types.is_null(a.type):
        return np.zeros(len(a), dtype=bool)
    if a.null_count == 0:
        return np.ones(len(a), dtype=bool)
    return numpy_of(a.is_valid())


def _differs(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Cells that differ between two arrays of the same type and length."""
    t = a.type
    if pa.types.is_dictionary(t):
        return _differs(a.dictionary_decode(), b.dictionary_decode())
    if isinstance(t, pa.ExtensionType):
        return _differs(a.storage, b.storage)
    if pa.types.is_map(t):  # a map is its list of (key, value) entries, in order
        entries = pa.list_(pa.struct([pa.field("key", t.key_type), pa.field("value", t.item_type)]))
        return _differs(a.cast(entries), b.cast(entries))
    if pa.types.is_list_view(t) or pa.types.is_large_list_view(t):
        return _differs(a.cast(pa.large_list(t.value_type)), b.cast(pa.large_list(t.value_type)))
    valid_a, valid_b = _valid(a), _valid(b)
    both = valid_a & valid_b
    out = valid_a != valid_b
    if both.any():
        out |= both & _values_differ(a, b, both)
    return out


def _values_differ(a: pa.Array, b: pa.Array, both: np.ndarray) -> np.ndarray:
    """Where both cells hold a value: do the values differ? (Rows where either is null: any answer.)"""
    t = a.type
    if pa.types.is_null(t):
        return np.zeros(len(a), dtype=bool)
    if pa.types.is_floating(t):
        return _floats_differ(a, b)
    if _is_list(t):
        return _lists_differ(a, b, both)
    if pa.types.is_struct(t):
        out = np.zeros(len(a), dtype=bool)
        for i in range(t.num_fields):
            out |= _differs(pc.struct_field(a, [i]), pc.struct_field(b, [i]))
        return out
    try:
        return _false_where_null(pc.not_equal(a, b))
    except pa.ArrowNotImplementedError:  # a type without a comparison kernel (e.g. intervals)
        return np.array([x != y for x, y in zip(a.to_pylist(), b.to_pylist(), strict=True)], dtype=bool)


def _false_where_null(flags: pa.Array) -> np.ndarray:
    """A boolean array's values, False where null (pc.fill_null would build a scalar: that imports pandas)."""
    values = numpy_of(flags)
    return values & numpy_of(flags.is_valid()) if flags.null_count else values


def _floats_differ(a: pa.Array, b: pa.Array) -> np.ndarray:
    """By bits: -0.0 differs from 0.0; any NaN equals any NaN."""
    na, nb = numpy_of(a), numpy_of(b)  # null slots: masked by the caller
    bits = np.dtype(f"u{na.dtype.itemsize}")
    return (na.view(bits) != nb.view(bits)) & ~(np.isnan(na) & np.isnan(nb))


def _lists_differ(a: pa.Array, b: pa.Array, both: np.ndarray) -> np.ndarray:
    """Different lengths, or an element that differs (elements compared recursively, all rows at once)."""
    if pa.types.is_fixed_size_list(a.type):
        out = np.zeros(len(a), dtype=bool)
    else:
        out = (_lengths(a) != _lengths(b))
    rows = np.flatnonzero(both & ~out)
    if not len(rows):
        return out
    take = arrow_indices(rows)
    sa, sb = a.take(take), b.take(take)
    fa, fb = pc.list_flatten(sa), pc.list_flatten(sb)
    if len(fa):
        element_differs = _differs(fa, fb)
        parents = numpy_of(pc.list_parent_indices(sa))
        out[rows[np.bincount(parents[element_differs], minlength=len(rows)) > 0]] = True
    return out


def _lengths(a: pa.Array) -> np.ndarray:
    lengths = pc.list_value_length(a)
    return numpy_of(lengths) * _false_where_null(pc.is_valid(lengths)) if lengths.null_count else numpy_of(lengths)

