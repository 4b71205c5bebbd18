"""The exact comparison rules of `rowdiff`, type by type, and the id-matching of shard plans that differ."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scalequest_dataset.diffing.rows import column_differs, compare_shards, widened
from scalequest_dataset.diffing.stats import Distributions, row_lengths
from scalequest_dataset.run.files import PARQUET_OPTIONS

NAN = math.nan
UTC = dt.timezone.utc


def differs(type_a: pa.DataType, a: list, b: list, type_b: pa.DataType | None = None) -> list[bool]:
    return column_differs(pa.array(a, type_a), pa.array(b, type_b or type_a)).tolist()


@pytest.mark.parametrize(("type_", "a", "b", "expected"), [
    # floats by bits: -0.0 is not 0.0; NaN equals NaN; null vs null no change, null vs value a change
    (pa.float64(), [0.0, -0.0, NAN, NAN, 1.0, None, None, math.inf],
     [-0.0, -0.0, NAN, 1.0, 1.0, None, 2.0, math.inf], [True, False, False, True, False, False, True, False]),
    (pa.float32(), [0.0, NAN, 1.5, None], [-0.0, NAN, 1.5, 1.5], [True, False, False, True]),
    (pa.float64(), [NAN, NAN], [-NAN, float(np.frombuffer(b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0])],
     [False, False]),  # NaNs with another sign or payload: still NaN
    (pa.float16(), [0.0, NAN, 1.5], [-0.0, NAN, 1.5], [True, False, False]),
    (pa.int64(), [1, None, 3, None], [1, None, 4, 0], [False, False, True, True]),
    (pa.bool_(), [True, False, None], [True, True, False], [False, True, True]),
    (pa.string(), ["a", "", None, "é"], ["a", None, None, "e"], [False, True, False, True]),
    (pa.large_string(), ["x" * 1000, "b"], ["x" * 1000, "c"], [False, True]),
    (pa.binary(), [b"\x00", b""], [b"\x00", None], [False, True]),
    (pa.large_binary(), [b"ab", b"c"], [b"ab", b"d"], [False, True]),
    (pa.binary(2), [b"ab", b"cd"], [b"ab", b"ce"], [False, True]),
    (pa.timestamp("us", tz="UTC"), [dt.datetime(2024, 1, 1, tzinfo=UTC)] * 2,
     [dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC)], [False, True]),
    (pa.date32(), [dt.date(2024, 1, 1), None], [dt.date(2024, 1, 1), dt.date(2024, 1, 2)], [False, True]),
    (pa.decimal128(9, 2), [Decimal("1.20"), Decimal("3")], [Decimal("1.2"), Decimal("3.01")], [False, True]),
    (pa.null(), [None, None], [None, None], [False, False]),
    (pa.list_(pa.string()), [["a"], ["a", "b"], [], None, ["x", None], []],
     [["a"], ["a"], None, None, ["x", None], [None]], [False, True, True, False, False, True]),
    (pa.list_(pa.float64()), [[NAN], [0.0], [1.0, 2.0]], [[NAN], [-0.0], [2.0, 1.0]], [False, True, True]),
    (pa.large_list(pa.list_(pa.int32())), [[[1], [2, 3]], [[1], []], [[1]]], [[[1], [2, 3]], [[1], None], [[1], []]],
     [False, True, True]),
    (pa.list_(pa.int32(), 2), [[1, 2], [1, None], None], [[1, 2], [1, 3], None], [False, True, False]),
    (pa.struct([("x", pa.int32()), ("y", pa.list_(pa.float64()))]),
     [{"x": 1, "y": [NAN]}, {"x": 1, "y": [0.0]}, None, {"x": None, "y": None}],
     [{"x": 1, "y": [NAN]}, {"x": 1, "y": [-0.0]}, {"x": None, "y": None}, {"x": None, "y": None}],
     [False, True, True, False]),
    # maps: (key, value) entries in order; another order is a change
    (pa.map_(pa.string(), pa.int32()), [[("a", 1), ("b", 2)], [("a", 1), ("b", 2)], [], None],
     [[("a", 1), ("b", 2)], [("b", 2), ("a", 1)], [("a", None)], None], [False, True, True, False]),
    (pa.map_(pa.string(), pa.map_(pa.string(), pa.float64())), [[("a", [("b", 0.0)])]], [[("a", [("b", -0.0)])]],
     [True]),
    (pa.list_(pa.dictionary(pa.int8(), pa.string())), [["x", None], ["y"]], [["x", None], ["z"]], [False, True]),
])
def test_cells_compare_exactly_whatever_the_type(type_, a, b, expected):
    assert differs(type_, a, b) == expected


def test_dictionary_values_are_compared_decoded():
    a = pa.DictionaryArray.from_arrays(pa.array([0, 1, None]), pa.array(["x", "y"]))
    b = pa.DictionaryArray.from_arrays(pa.array([1, 0, 0]), pa.array(["y", "x"]))  # x, y, y: another dictionary
    assert column_differs(a, b).tolist() == [False, False, True]
    chunked = pa.chunked_array([a.slice(0, 1), b.slice(1, 2)])  # chunks with different dictionaries
    assert column_differs(chunked, pa.chunked_array([pa.array(["x", "x", "y"])])).tolist() == [False, True, False]


def test_sliced_and_chunked_nested_arrays():
    a = pa.array([[1], [2, 3], [4], None, [5]], pa.list_(pa.int64())).slice(1)
    b = pa.chunked_array([pa.array([[2, 3]], pa.list_(pa.int64())), pa.array([[4], [9], [5]], pa.list_(pa.int64()))])
    assert column_differs(a, b).tolist() == [False, False, True, False]


@pytest.mark.parametrize(("type_a", "type_b", "a", "b", "expected"), [
    # lossless widenings: a value that survives the widening unchanged is no change
    (pa.int32(), pa.int64(), [1, None, 3], [1, None, 4], [False, False, True]),
    (pa.float32(), pa.float64(), [1.5, NAN, 0.0], [1.5, NAN, -0.0], [False, False, True]),
    (pa.string(), pa.large_string(), ["a", "b"], ["a", "c"], [False, True]),
    (pa.dictionary(pa.int32(), pa.string()), pa.string(), ["a", None], ["a", None], [False, False]),
    (pa.list_(pa.int32()), pa.large_list(pa.int64()), [[1], [2]], [[1], [3]], [False, True]),
    (pa.struct([("x", pa.int8())]), pa.struct([("x", pa.int64())]), [{"x": 1}, {"x": 2}], [{"x": 1}, {"x": 3}],
     [False, True]),
    # another kind of value: every row changes, except where both sides are null
    (pa.int64(), pa.string(), [1, None, None], ["1", None, "x"], [True, False, True]),
    (pa.int64(), pa.float64(), [1, 2], [1.0, 2.5], [True, True]),
    (pa.null(), pa.string(), [None, None], [None, "x"], [False, True]),
    (pa.struct([("x", pa.int8())]), pa.struct([("y", pa.int8())]), [{"x": 1}], [{"y": 1}], [True]),
    (pa.uint64(), pa.int64(), [2**63 + 1], [-1], [True]),  # the widening would lose the value: no common type
])
def test_retyped_columns(type_a, type_b, a, b, expected):
    assert differs(type_a, a, b, type_b) == expected


def test_widened_ignores_encodings_and_child_names():
    read_back = pa.list_(pa.field("element", pa.int32()))  # what Parquet gives for list<item: int32>
    assert widened(read_back) == widened(pa.list_(pa.int64())) == pa.large_list(pa.int64())
    assert widened(pa.dictionary(pa.int8(), pa.string())) == widened(pa.string_view()) == pa.large_string()


# ---------------------------------------------------------------------------------------------- shards


def write(path: Path, rows: list[dict], schema: pa.Schema, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema), path, **{**PARQUET_OPTIONS, **options})
    return path


SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("tags", pa.list_(pa.string()))])


def rows(ids: range, text: str = "t") -> list[dict]:
    return [{"id": f"r{i:03d}", "text": f"{text}{i}", "tags": [str(i)]} for i in ids]


def shards(folder: Path, batches: list[list[dict]], **options) -> list[Path]:
    return [write(folder / f"s{i}.parquet", b, SCHEMA, **options) for i, b in enumerate(batches)]


def test_different_shard_plans_are_matched_by_id(tmp_path):
    a = shards(tmp_path / "a", [rows(range(0, 10)), rows(range(10, 20)), rows(range(20, 30))])
    b_rows = rows(range(1, 31))  # r000 removed, r030 added
    b_rows[4]["text"] = "changed"  # r005
    b_rows[20]["tags"] = ["21", "x"]  # r021
    b = shards(tmp_path / "b", [b_rows[:15], b_rows[15:]])
    r = compare_shards(a, b, sample=10).rows
    assert (r["added"], r["removed"], r["changed"], r["compared"]) == (1, 1, 2, 29)
    assert r["added_ids"] == ["r030"] and r["removed_ids"] == ["r000"] and r["changed_ids"] == ["r005", "r021"]
    assert r["changed_by_column"] == {"tags": 1, "text": 1}
    assert [s["id"] for s in r["samples"]] == ["r005", "r021"]
    assert r["samples"][0]["changes"] == [{"column": "text", "a": "t5", "b": "changed", "diff": "--- a\n+++ b\n@@ -1 +1 @@\n-t5\n+changed"}]


def test_shards_out_of_id_order_overlapping_unsorted_or_without_statistics(tmp_path):
    # the manifest's order is the generators' order, not the ids' (tiny-b before tiny-a is allowed)
    a = shards(tmp_path / "a", [rows(range(20, 30)), rows(range(0, 20))])
    b_rows = rows(range(30))
    b_rows[25]["text"] = "changed"
    evens, odds = b_rows[0::2], b_rows[1::2][::-1]  # overlapping id ranges, one shard not sorted
    b = shards(tmp_path / "b", [odds, evens], write_statistics=False)
    r = compare_shards(a, b).rows
    assert (r["added"], r["removed"], r["changed"], r["changed_ids"]) == (0, 0, 1, ["r025"])


def test_duplicate_ids_are_an_error_naming_the_id(tmp_path):
    a = shards(tmp_path / "a", [rows(range(3))])
    b = shards(tmp_path / "b", [rows(range(2)), rows(range(1, 3))])
    with pytest.raises(ValueError, match="'r001' occurs twice"):
        compare_shards(a, b)


def test_same_rows_in_other_files_is_no_change_and_says_why(tmp_path):
    a = shards(tmp_path / "a", [rows(range(10))])
    b = shards(tmp_path / "b", [rows(range(10))], compression="snappy", compression_level=None)
    found = compare_shards(a, b)
    assert not found.differs and found.rows["compared"] == 10 and found.file_causes == []
    tagged = [write(tmp_path / "c.parquet", rows(range(10)), SCHEMA.with_metadata({"huggingface": "{}"}))]
    found = compare_shards(a, tagged)
    assert not found.differs and found.file_causes == ["the files' schema metadata differs: huggingface"]


def test_ids_listed_up_to_max_ids_while_counts_stay_complete(tmp_path):
    a = shards(tmp_path / "a", [rows(range(50))])
    b = shards(tmp_path / "b", [rows(range(50), text="u")])
    r = compare_shards(a, b, sample=3, max_ids=7).rows
    assert r["changed"] == 50 and len(r["changed_ids"]) == 7 and len(r["samples"]) == 3


def test_float_bits_in_a_real_shard_roundtrip(tmp_path):
    schema = pa.schema([("id", pa.string()), ("x", pa.float64())])
    a = [write(tmp_path / "a.parquet", [{"id": "1", "x": 0.0}, {"id": "2", "x": NAN}], schema)]
    b = [write(tmp_path / "b.parquet", [{"id": "1", "x": -0.0}, {"id": "2", "x": float(np.float64("nan"))}], schema)]
    assert compare_shards(a, b).rows["changed_ids"] == ["1"]


@pytest.mark.parametrize("id_type", [pa.large_string(), pa.dictionary(pa.int32(), pa.string())])
def test_ids_of_another_string_type_still_match(tmp_path, id_type):
    a = shards(tmp_path / "a", [rows(range(6))])
    b_rows = rows(range(1, 7))
    b_rows[0]["text"] = "changed"
    b_schema = pa.schema([("id", id_type), *list(SCHEMA)[1:]])
    b = [write(tmp_path / "b" / "s.parquet", b_rows[::-1], b_schema)]
    r = compare_shards(a, b).rows
    assert (r["added_ids"], r["removed_ids"], r["changed_ids"]) == (["r006"], ["r000"], ["r001"])


def test_every_stage_names_its_origin_and_group_by_a_lineage_column_the_diff_keeps():
    from scalequest_dataset.diffing.rows import is_lineage
    from scalequest_dataset.stages import REGISTRY, STAGE_ORDER

    assert tuple(cls.name for cls in REGISTRY) == STAGE_ORDER
    for before, cls in zip((None, *REGISTRY), REGISTRY, strict=False):
        assert is_lineage(cls.origin) and is_lineage(cls.group_key or "id"), cls.name
        # the origin is a column of the stage's rows; the group key one of its input's (the stage before it)
        assert cls.origin in cls.features, cls.name
        assert cls.group_key is None or cls.group_key in before.features, cls.name


# ---------------------------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("b_options", [{}, {"compression": "snappy", "compression_level": None}],
                         ids=["byte-identical columns", "no chunk alike"])
def test_stats_measured_once_for_unchanged_rows_equal_both_sides_measured_in_full(tmp_path, b_options):
    """b's lengths are a's except in the rows the comparison flags: the same report as measuring b in full, with
    nulls appearing and disappearing, non-ASCII text, empty strings, and rows equal in content but not in bytes
    (-0.0 vs 0.0 is a change; NaNs of other payloads are not); whether or not some columns are byte-identical."""
    schema = pa.schema([("id", pa.string()), ("query", pa.string()), ("response", pa.string()),
                        ("reward", pa.float64()), ("generator", pa.string())])
    other_nan = float(np.frombuffer(np.uint64(0x7FF8000000000123).tobytes(), np.float64)[0])
    a_rows = [{"id": f"r{i:02d}", "query": "q" * i, "response": "x" * (i % 7), "reward": i / 10,
               "generator": "m1"} for i in range(40)]
    b_rows = [dict(r) for r in a_rows]
    b_rows[1]["response"] = "π ≤ 3.15, longer"  # non-ASCII, another length
    b_rows[2]["response"] = None  # a value becomes null
    a_rows[3]["response"] = None  # a null becomes a value
    b_rows[4]["response"] = ""
    b_rows[5].update(response="same length", generator="m2")
    a_rows[6]["reward"], b_rows[6]["reward"] = 0.0, -0.0
    a_rows[7]["reward"], b_rows[7]["reward"] = NAN, other_nan
    a_rows[8]["response"] = b_rows[8]["response"] = None  # null on both sides: no change
    b_rows[30]["response"] = "é" * 30
    a = [write(tmp_path / "a" / f"s{k}.parquet", a_rows[k * 20:(k + 1) * 20], schema) for k in range(2)]
    b = [write(tmp_path / "b" / f"s{k}.parquet", b_rows[k * 20:(k + 1) * 20], schema, **b_options) for k in range(2)]
    found = compare_shards(a, b)
    assert found.rows["changed_ids"] == ["r01", "r02", "r03", "r04", "r05", "r06", "r30"]
    full = {side: Distributions() for side in "ab"}
    for side, paths in (("a", a), ("b", b)):
        for path in paths:
            full[side].add(pq.read_table(path))
    assert found.stats == Distributions.summarise(full["a"], full["b"])
    assert found.stats["len(response)"]["b"]["n"] == 38 and found.stats["len(response)"]["a"]["n"] == 38


@pytest.mark.parametrize("type_", [pa.string(), pa.large_string(), pa.string_view()])
def test_row_lengths_count_characters_of_any_text(type_):
    values = ["abc", None, "", "π≤", "é" * 5, "plain ascii", None, "日本語"]
    column = pa.array(values, type_)
    for part in (column, column.slice(2, 3), column.slice(5), pa.array(["only", "ascii", None], type_)):
        lengths, valid = row_lengths(part)
        as_python = part.to_pylist()
        assert lengths.tolist() == [len(v) if v is not None else 0 for v in as_python]
        assert (valid.tolist() if valid is not None else [True] * len(part)) == [v is not None for v in as_python]
