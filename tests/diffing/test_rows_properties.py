"""Property-based: random schemas (nested types included), random rows with unique string ids, random edits
(rows added and removed, cells changed, columns added, removed and retyped), both sides written as Parquet
shards with different shard plans; the diff must name exactly the edits.

The expected answer comes from an oracle over Python values (`same`), written from the rules in
`rowdiff`'s docstring, not from its code. Deterministic for CI: derandomized, a fixed number of examples."""

from __future__ import annotations

import datetime as dt
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from scalequest_dataset.diffing.rows import compare_shards
from scalequest_dataset.run.files import PARQUET_OPTIONS

CI = settings(derandomize=True, max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LEAVES = [pa.int8(), pa.int32(), pa.int64(), pa.uint16(), pa.float16(), pa.float32(), pa.float64(), pa.bool_(),
          pa.string(), pa.large_string(), pa.binary(), pa.large_binary(), pa.timestamp("us"),
          pa.timestamp("ms", tz="UTC"), pa.date32(), pa.decimal128(9, 2), pa.null(),
          pa.dictionary(pa.int32(), pa.string())]


def _struct(children: list[pa.DataType]) -> pa.DataType:
    return pa.struct([(f"f{i}", t) for i, t in enumerate(children)])


arrow_types = st.recursive(st.sampled_from(LEAVES), lambda inner: st.one_of(
    inner.map(pa.list_), inner.map(pa.large_list), inner.map(lambda t: pa.list_(t, 2)),
    st.lists(inner, min_size=1, max_size=2).map(_struct), inner.map(lambda t: pa.map_(pa.string(), t))),
    max_leaves=6)

SPECIAL_FLOATS = st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf, 1.0])


def _other_zero(v: float) -> float:
    return math.copysign(0.0, -math.copysign(1.0, v)) if v == 0 else -v


def values(t: pa.DataType) -> st.SearchStrategy[Any]:
    """Values of type `t`, null included (nullable at every level)."""
    return st.none() if pa.types.is_null(t) else st.one_of(st.none(), _present(t))


def _present(t: pa.DataType) -> st.SearchStrategy[Any]:
    if pa.types.is_integer(t):
        info = {8: 2**7, 16: 2**15, 32: 2**31, 64: 2**63}[t.bit_width]
        return st.integers(0, 2 * info - 1) if pa.types.is_unsigned_integer(t) else st.integers(-info, info - 1)
    if pa.types.is_floating(t):
        return st.one_of(SPECIAL_FLOATS, st.floats(width={16: 16, 32: 32, 64: 64}[t.bit_width]))
    if pa.types.is_boolean(t):
        return st.booleans()
    if pa.types.is_dictionary(t):
        return st.sampled_from(["x", "y", "zz", "é"])
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return st.text(max_size=6)
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return st.binary(max_size=4)
    if pa.types.is_timestamp(t):
        tz = st.just(dt.timezone.utc) if t.tz else st.none()
        moments = st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1), timezones=tz)
        return moments.map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000) if t.unit == "ms" else d)
    if pa.types.is_date(t):
        return st.dates(dt.date(1970, 1, 1), dt.date(2100, 1, 1))
    if pa.types.is_decimal(t):
        return st.decimals(-(10**6), 10**6, places=2, allow_nan=False, allow_infinity=False)
    if pa.types.is_fixed_size_list(t):
        return st.lists(values(t.value_type), min_size=t.list_size, max_size=t.list_size)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return st.lists(values(t.value_type), max_size=3)
    if pa.types.is_map(t):
        return st.dictionaries(st.text(max_size=2), values(t.item_type), max_size=3).map(lambda d: list(d.items()))
    if pa.types.is_struct(t):
        return st.fixed_dictionaries({f.name: values(f.type) for f in t})
    raise AssertionError(f"no values for {t}")


def nearby(t: pa.DataType, v: Any) -> st.SearchStrategy[Any]:
    """A value close to `v`, where a careless comparison goes wrong: the other zero, one element of a
    list or one field of a struct changed, map entries reordered, null inside; or any value of `t`."""
    if v is None or pa.types.is_null(t):
        return values(t)
    anything = values(t)
    if pa.types.is_floating(t):
        return st.one_of(st.sampled_from([_other_zero(v), math.nan, v]), anything)
    if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
        if not v:
            return anything
        return st.integers(0, len(v) - 1).flatmap(lambda i: nearby(t.value_type, v[i]).map(
            lambda x: [*v[:i], x, *v[i + 1:]]))
    if pa.types.is_struct(t):
        return st.sampled_from([f.name for f in t]).flatmap(lambda k: nearby(t.field(k).type, v[k]).map(
            lambda x: {**v, k: x}))
    if pa.types.is_map(t):
        if not v:
            return anything
        changed = st.integers(0, len(v) - 1).flatmap(lambda i: nearby(t.item_type, v[i][1]).map(
            lambda x: [*v[:i], (v[i][0], x), *v[i + 1:]]))
        return st.one_of(changed, st.just(v[::-1]), anything)
    return anything


def same(a: Any, b: Any) -> bool:
    """The diff's notion of an unchanged cell, on Python values: floats by sign and value, NaN == NaN."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, float) and isinstance(b, float)):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# ---------------------------------------------------------------------------------------------- edits


def widenings(t: pa.DataType) -> list[pa.DataType]:
    """Retypes that keep every value (the diff must not count their cells as changed)."""
    options = {pa.int32(): [pa.int64()], pa.int8(): [pa.int32(), pa.int64()], pa.float32(): [pa.float64()],
               pa.string(): [pa.large_string(), pa.dictionary(pa.int32(), pa.string())]}.get(t, [])
    if pa.types.is_list(t):
        options = [*options, pa.large_list(t.value_type)]
    return options


def incompatible(t: pa.DataType) -> tuple[pa.DataType, Any]:
    """A retype to another kind of value, with the conversion of a value."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
        return pa.int64(), lambda v: None if v is None else len(v)
    return pa.string(), lambda v: None if v is None else repr(v)


@dataclass
class Side:
    schema: pa.Schema
    rows: dict[str, dict[str, Any]]  # id -> row


@dataclass
class Edits:
    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    incompatible: set[str] = field(default_factory=set)  # retyped columns whose every value changed kind


def draw_version(data: st.DataObject) -> Side:
    column_type = st.one_of(st.sampled_from(LEAVES), arrow_types, st.lists(arrow_types, min_size=1, max_size=2).map(_struct))
    columns = data.draw(st.lists(column_type, min_size=1, max_size=4), label="column types")
    schema = pa.schema([("id", pa.string()), *((f"c{i}", t) for i, t in enumerate(columns))])
    ids = data.draw(st.lists(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=5),
                             unique=True, min_size=1, max_size=12), label="ids")
    rows = {i: {"id": i, **{f.name: data.draw(values(f.type)) for f in schema if f.name != "id"}} for i in ids}
    return Side(schema, rows)


def draw_edits(data: st.DataObject, a: Side) -> tuple[Side, Edits]:
    edits = Edits()
    rows = {i: dict(r) for i, r in a.rows.items()}
    fields = {f.name: f.type for f in a.schema if f.name != "id"}
    edits.removed = set(data.draw(st.lists(st.sampled_from(sorted(rows)), unique=True), label="removed")
                        if rows else [])
    for i in edits.removed:
        del rows[i]
    for i in sorted(rows):  # change cells (a draw may give the same value: the oracle decides)
        for name in fields:
            if data.draw(st.booleans(), label=f"change {i!r}.{name}"):
                rows[i][name] = data.draw(nearby(fields[name], rows[i][name]))
    new_ids = data.draw(st.lists(st.text(min_size=1, max_size=5).filter(lambda x: x not in a.rows), unique=True,
                                 max_size=4), label="added")
    for i in new_ids:
        rows[i] = {"id": i, **{name: data.draw(values(t)) for name, t in fields.items()}}
    edits.added = set(new_ids)
    for name in list(fields):  # schema edits
        kind = data.draw(st.sampled_from(["keep", "keep", "remove", "widen", "retype"]), label=f"{name} edit")
        if kind == "remove":
            del fields[name]
            for r in rows.values():
                del r[name]
        elif kind == "widen" and widenings(fields[name]):
            fields[name] = data.draw(st.sampled_from(widenings(fields[name])))
        elif kind == "retype":
            fields[name], convert = incompatible(fields[name])
            edits.incompatible.add(name)
            for r in rows.values():
                r[name] = convert(r[name])
    if data.draw(st.booleans(), label="add a column"):
        t = data.draw(arrow_types)
        fields["new"] = t
        for r in rows.values():
            r["new"] = data.draw(values(t))
    return Side(pa.schema([("id", pa.string()), *fields.items()]), rows), edits


def write_shards(folder: Path, side: Side, data: st.DataObject) -> list[Path]:
    """The rows as 1-3 Parquet shards: contiguous id ranges (our writer's plan) or rows dealt at random
    (overlapping ranges), each shard sorted by id or not."""
    folder.mkdir()
    ids = sorted(side.rows)
    n = data.draw(st.integers(1, 3), label="shards")
    if data.draw(st.booleans(), label="contiguous"):
        cuts = sorted(data.draw(st.lists(st.integers(0, len(ids)), min_size=n - 1, max_size=n - 1)))
        parts = [ids[lo:hi] for lo, hi in zip([0, *cuts], [*cuts, len(ids)], strict=True)]
    else:
        owner = [data.draw(st.integers(0, n - 1)) for _ in ids]
        parts = [[i for i, o in zip(ids, owner, strict=True) if o == k] for k in range(n)]
    paths = []
    for k, part in enumerate(parts):
        if not data.draw(st.booleans(), label="sorted"):
            part = part[::-1]
        table = pa.Table.from_pylist([side.rows[i] for i in part], schema=side.schema)
        paths.append(folder / f"train-{k:05d}-of-{n:05d}.parquet")
        pq.write_table(table, paths[-1], **PARQUET_OPTIONS)
    return paths


def expected(a: Side, b: Side, edits: Edits, schema_a: pa.Schema, schema_b: pa.Schema) -> dict[str, Any]:
    common = [c for c in schema_a.names if c in schema_b.names and c != "id"]
    by_column: dict[str, int] = {}
    changed: set[str] = set()
    for i in set(a.rows) & set(b.rows):
        for c in common:
            va, vb = a.rows[i][c], b.rows[i][c]
            if (c in edits.incompatible and not (va is None and vb is None)) or (
                    c not in edits.incompatible and not same(va, vb)):
                by_column[c] = by_column.get(c, 0) + 1
                changed.add(i)
    ta, tb = {f.name: str(f.type) for f in schema_a}, {f.name: str(f.type) for f in schema_b}
    return {"by_column": dict(sorted(by_column.items())), "changed": changed,
            "schema": {"added": [c for c in tb if c not in ta], "removed": [c for c in ta if c not in tb],
                       "retyped": [{"column": c, "a": ta[c], "b": tb[c]} for c in common if ta[c] != tb[c]]}}


def _kind(t: pa.DataType) -> str:
    nested = [k for k, is_ in (("map", pa.types.is_map), ("struct", pa.types.is_struct),
                               ("fixed-size list", pa.types.is_fixed_size_list), ("list", _is_list)) if is_(t)]
    return nested[0] if nested else "flat"


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


@CI
@given(st.data())
def test_the_diff_names_exactly_the_edits(data):
    a = draw_version(data)
    b, edits = draw_edits(data, a)
    with tempfile.TemporaryDirectory() as tmp:
        paths_a, paths_b = write_shards(Path(tmp) / "a", a, data), write_shards(Path(tmp) / "b", b, data)
        found = compare_shards(paths_a, paths_b, sample=0, max_ids=10_000)
        want = expected(a, b, edits, pq.read_schema(paths_a[0]), pq.read_schema(paths_b[0]))
    r = found.rows
    for name in want["by_column"]:  # what the examples exercised (--hypothesis-show-statistics)
        event(f"changed cells in a {_kind(b.schema.field(name).type)} column")
    event(f"schema: {sorted(k for k, v in want['schema'].items() if v)}")
    assert set(r["added_ids"]) == edits.added and r["added"] == len(edits.added)
    assert set(r["removed_ids"]) == edits.removed and r["removed"] == len(edits.removed)
    assert r["compared"] == len(set(a.rows) & set(b.rows))
    assert r["changed_by_column"] == want["by_column"]
    assert set(r["changed_ids"]) == want["changed"] and r["changed"] == len(want["changed"])
    assert found.schema == want["schema"]


@CI
@given(st.data())
def test_a_version_compared_with_itself_has_no_changes(data):
    a = draw_version(data)
    with tempfile.TemporaryDirectory() as tmp:  # the same rows, cut into other shards
        found = compare_shards(write_shards(Path(tmp) / "a", a, data), write_shards(Path(tmp) / "b", a, data))
    assert not found.differs, found.rows
    assert found.rows["compared"] == len(a.rows)

