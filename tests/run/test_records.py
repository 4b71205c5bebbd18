"""run/records.py: the records of a run (plan, shard record, manifest), validated strictly on read and written
as exact bytes."""

from __future__ import annotations

import json

import pytest

from scalequest_dataset.recipe.params import ConfigError
from scalequest_dataset.run import records
from scalequest_dataset.run.records import (
    Counts,
    FileRecord,
    ManifestShard,
    Plan,
    ShardSpec,
    Tokens,
    stage_content,
)

PLAN = Plan(stage="questions", fingerprint="f", config="c", input=None, models={},
            shards=[ShardSpec(index=0, rows=4)], prepared=None)


def file(content: str) -> FileRecord:
    return FileRecord(file="train-00000-of-00001.parquet", rows=1, bytes=10, sha256="0" * 64, content=content)


def shard(index: int, train: str, dropped: str | None = None) -> ManifestShard:
    files = {"train": file(train)} | ({"dropped": file(dropped)} if dropped else {})
    return ManifestShard(index=index, rows_in=1, files=files, drops={}, tokens=Tokens())


def test_a_record_round_trips_through_its_exact_bytes(tmp_path):
    path = tmp_path / "plan.json"
    records.write(path, PLAN)
    assert path.read_bytes() == records.to_bytes(PLAN)
    assert records.read(Plan, path) == PLAN


@pytest.mark.parametrize(("edit", "field"), [
    (lambda d: d.update(surprise=1), "surprise"),            # an unknown field is refused, not ignored
    (lambda d: d.pop("fingerprint"), "fingerprint"),
    (lambda d: d["shards"][0].update(rows="four"), "shards.0.rows"),
])
def test_a_bad_record_is_one_error_naming_its_source_and_the_field(edit, field):
    data = json.loads(records.to_bytes(PLAN))
    edit(data)
    with pytest.raises(ConfigError) as info:
        records.parse(Plan, json.dumps(data), "RUN/state/questions/plan.json")
    assert "RUN/state/questions/plan.json" in str(info.value) and field in str(info.value)


def test_not_json_and_a_missing_file_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"x\.json is not a valid plan record: not JSON"):
        records.parse(Plan, b"{oops", "x.json")
    with pytest.raises(FileNotFoundError, match=r"nope\.json does not exist"):
        records.read(Plan, tmp_path / "nope.json")


def test_the_stage_content_digest_sees_order_split_and_every_shard():
    a, b = shard(0, "sha256:a"), shard(1, "sha256:b")
    digest = stage_content([a, b])
    assert digest.startswith("sha256:") and stage_content([a, b]) == digest
    assert stage_content([b, a]) != digest                     # shard order is part of the data
    assert stage_content([a]) != digest
    assert stage_content([a, shard(1, "sha256:c")]) != digest  # one shard's rows changed
    # The same rows under another split are other data (kept vs dropped).
    kept, dropped = a, a.model_copy(update={"files": {"dropped": a.files["train"]}})
    assert stage_content([dropped]) != stage_content([kept])


def test_counts_and_tokens_add_up():
    assert Counts(rows_in=10, rows_out=7, dropped={"x": 2, "y": 1}).rows_dropped == 3
    total = Tokens(prompt=1, completion=2) + Tokens(prompt=10, completion=20)
    assert (total.prompt, total.completion) == (11, 22)
