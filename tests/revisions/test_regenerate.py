"""revisions/regenerate.py: where a rebuilt shard does not reproduce, the first differing rows are named by the
diff's own bit-exact comparison (diffing.rows): a NaN equals a NaN, -0.0 differs from 0.0."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq

from scalequest_dataset.revisions.regenerate import _first_differences


def shard(path, ids, rewards, texts=None):
    texts = texts or [f"t{i}" for i in ids]
    pq.write_table(pa.table({"id": ids, "reward": pa.array(rewards, pa.float32()), "text": texts}), path)
    return path


def test_a_nan_on_both_sides_is_not_a_difference(tmp_path):
    nan = float("nan")
    a = shard(tmp_path / "a.parquet", ["x", "y"], [nan, 1.0])
    b = shard(tmp_path / "b.parquet", ["x", "y"], [nan, 1.0])
    assert _first_differences(a, b) == []


def test_minus_zero_is_not_zero(tmp_path):
    a = shard(tmp_path / "a.parquet", ["x", "y"], [0.0, 1.0])
    b = shard(tmp_path / "b.parquet", ["x", "y"], [-0.0, 1.0])
    [d] = _first_differences(a, b)
    assert (d["id"], d["column"], d["published"]) == ("x", "reward", 0.0)
    assert math.copysign(1.0, d["now"]) == -1.0


def test_rows_in_another_order_missing_rows_and_the_first_differing_column(tmp_path):
    a = shard(tmp_path / "a.parquet", ["w", "x", "y", "z"], [1.0, 2.0, 3.0, float("nan")], ["a", "b", "c", "d"])
    b = shard(tmp_path / "b.parquet", ["z", "y", "w"], [4.0, 3.0, 1.0], ["d", "C", "a"])  # x missing, y's text, z's NaN
    found = _first_differences(a, b)
    assert [(d["id"], d["column"], d["now"]) for d in found] == [("x", "<row>", "missing"), ("y", "text", "C"),
                                                                  ("z", "reward", 4.0)]
    assert math.isnan(found[2]["published"])
    assert _first_differences(a, b, limit=1) == found[:1]
