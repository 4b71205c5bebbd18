"""Deterministic shards and their two identities: the file's sha256 (every byte) and the rows' content digest
(independent of the Parquet writer's options, encodings, chunking and metadata, sensitive to every value)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings

from scalequest_dataset.run.files import (
    MAX_ROW_GROUP_BYTES,
    PARQUET_OPTIONS,
    content_digest,
    file_content_digest,
    sha256_file,
    write_rows,
    write_table,
)
from scalequest_dataset.stages import STAGES

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

texts = st.text(max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
COLUMNS = {
    "s": (pa.string(), st.one_of(st.none(), texts)),
    "i": (pa.int64(), st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1))),
    "f": (pa.float64(), st.one_of(st.none(), floats)),
    "b": (pa.bool_(), st.one_of(st.none(), st.booleans())),
    "l": (pa.list_(pa.string()), st.one_of(st.none(), st.lists(st.one_of(st.none(), texts), max_size=3))),
    "t": (pa.struct([("x", pa.int32()), ("y", pa.string())]),
          st.one_of(st.none(), st.fixed_dictionaries({"x": st.one_of(st.none(), st.integers(-99, 99)),
                                                       "y": st.one_of(st.none(), texts)}))),
}


@st.composite
def tables(draw) -> pa.Table:
    names = draw(st.lists(st.sampled_from(sorted(COLUMNS)), min_size=1, max_size=len(COLUMNS), unique=True))
    n = draw(st.integers(0, 12))
    data = {name: draw(st.lists(COLUMNS[name][1], min_size=n, max_size=n)) for name in names}
    return pa.table({name: pa.array(data[name], COLUMNS[name][0]) for name in names})


WRITERS = [
    {"compression": "none", "use_dictionary": False},
    {"compression": "snappy", "use_dictionary": True, "row_group_size": 3},
    {"compression": "gzip", "data_page_version": "1.0", "store_schema": False},
    {"compression": "zstd", "write_statistics": False, "row_group_size": 1},
]


@SETTINGS
@given(table=tables(), writer=st.sampled_from(WRITERS))
def test_the_content_digest_does_not_depend_on_the_writer(tmp_path_factory, table, writer):
    folder = tmp_path_factory.mktemp("w")
    ours = write_table(folder / "ours.parquet", table)
    options = dict(writer)
    row_group_size = options.pop("row_group_size", None)
    pq.write_table(table.replace_schema_metadata({"anything": "else"}), folder / "theirs.parquet",
                   row_group_size=row_group_size, **options)
    assert ours["content"] == content_digest(table) == file_content_digest(folder / "ours.parquet")
    assert file_content_digest(folder / "theirs.parquet") == ours["content"]
    assert ours["sha256"] == sha256_file(folder / "ours.parquet")  # hashed as it was written, and right
    chunked = pa.concat_tables([table.slice(0, len(table) // 2), table.slice(len(table) // 2)])
    assert content_digest(chunked) == ours["content"]


def _edit(value, kind: pa.DataType):
    """A different value of the same type."""
    if value is None:
        return {"s": "x", "i": 1, "f": 1.0, "b": True, "l": [], "t": {"x": 1, "y": None}}[_name(kind)]
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return 1.0 if math.isnan(value) else (-value if value != 0 else math.copysign(0.0, -math.copysign(1, value)))
    if isinstance(value, int):
        return value - 1 if value > -(2**63) else value + 1
    if isinstance(value, str):
        return value + "!"
    if isinstance(value, list):
        return [*value, None]
    return {**value, "x": (value["x"] or 0) + 1}


def _name(kind: pa.DataType) -> str:
    return next(n for n, (t, _) in COLUMNS.items() if t == kind)


@SETTINGS
@given(table=tables(), data=st.data())
def test_the_content_digest_sees_every_value(table, data):
    if table.num_rows == 0:
        return
    column = data.draw(st.sampled_from(table.column_names))
    row = data.draw(st.integers(0, table.num_rows - 1))
    values = table.column(column).to_pylist()
    values[row] = _edit(values[row], table.schema.field(column).type)
    edited = table.set_column(table.schema.get_field_index(column), column,
                              pa.array(values, table.schema.field(column).type))
    assert content_digest(edited) != content_digest(table)


def test_a_stage_shard_is_byte_identical_when_written_twice(tmp_path):
    rows = [{"id": f"q-{i:08d}", "generator": "q", "index": i, "query": f"What is {i}?", "seed": i,
             "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 4} for i in range(50)]
    a = write_rows(tmp_path / "a.parquet", rows[::-1], STAGES["questions"].features)
    b = write_rows(tmp_path / "b.parquet", rows, STAGES["questions"].features)
    assert Path(tmp_path / "a.parquet").read_bytes() == Path(tmp_path / "b.parquet").read_bytes()
    assert {k: v for k, v in a.items() if k != "file"} == {k: v for k, v in b.items() if k != "file"}
    assert pq.read_table(tmp_path / "a.parquet").column("id").to_pylist() == sorted(r["id"] for r in rows)


def test_a_null_is_not_its_fill_value_and_nan_is_one_value():
    def digest(values, kind):
        return content_digest(pa.table({"c": pa.array(values, kind)}))

    assert digest([None], pa.int64()) != digest([0], pa.int64())
    assert digest([None], pa.string()) != digest([""], pa.string())
    assert digest([None], pa.list_(pa.string())) != digest([[]], pa.list_(pa.string()))
    assert digest([-0.0], pa.float64()) != digest([0.0], pa.float64())
    assert digest([float("nan")], pa.float64()) == digest([-float("nan")], pa.float64())
    assert digest(["ab", "c"], pa.string()) != digest(["a", "bc"], pa.string())  # value boundaries count


# ---------------------------------------------------------------------------------------------- the writer

WORDS = "the of a to and is in that find what how many number sum total solve value equation let answer".split()


def _questions(n: int, seed: int = 0, words: int = 300) -> list[dict]:
    """Question rows of `words` words on average (300: ~1.5 KB, so a shard's query column is several pages)."""
    rng = np.random.default_rng(seed)
    lengths = rng.poisson(words, n)
    text = np.array(WORDS)[rng.integers(0, len(WORDS), lengths.sum())]
    cuts = np.concatenate([[0], np.cumsum(lengths)])
    return [{"id": f"q-{i:08d}", "generator": "q", "index": i, "query": " ".join(text[cuts[i] : cuts[i + 1]]),
             "seed": i, "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 300} for i in range(n)]


def test_the_writer_options_are_those_of_datasets_push_to_hub():
    from datasets import config

    assert PARQUET_OPTIONS["write_page_index"] is True
    assert PARQUET_OPTIONS["use_content_defined_chunking"] == config.DEFAULT_CDC_OPTIONS
    assert MAX_ROW_GROUP_BYTES == 100 * 10**6 and config.MAX_ROW_GROUP_SIZE == "100MB"


def test_a_shard_is_byte_identical_when_rewritten_with_cdc_and_page_index(tmp_path):
    rows = _questions(10_000, words=55)
    features = STAGES["questions"].features
    a = write_rows(tmp_path / "a.parquet", rows, features)
    b = write_rows(tmp_path / "b.parquet", rows[::-1], features)
    # The same rows as another batching: the bytes must not follow how the table was built.
    table = pq.read_table(tmp_path / "a.parquet")
    c = write_table(tmp_path / "c.parquet", pa.Table.from_batches(table.to_batches(max_chunksize=1000)))
    assert a["sha256"] == b["sha256"] == c["sha256"]
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "c.parquet").read_bytes()
    meta = pq.ParquetFile(tmp_path / "a.parquet").metadata
    assert json.loads(meta.metadata[b"content_defined_chunking"]) == PARQUET_OPTIONS["use_content_defined_chunking"]
    assert all(meta.row_group(0).column(i).has_offset_index for i in range(meta.num_columns))  # the page index
    assert meta.num_row_groups == 1  # 3 MB of Arrow data: one row group, as `datasets` would cut it

