""""Looks the same but is not" (issue 19, item 7): for each property that once could break unnoticed, the case a
lax check would wave through. Each was broken on purpose and seen to fail (the note on each test says how).

1. publish: the same recipe with other rows is not the same data
2. diff: floats one ulp apart differ
3. regenerate: the same rows in other bytes are not byte-identical
4. a shard is never written to its final name before it is whole (a kill inside the write)
5. finalize checks the shards' bytes (damage after the last check)
6. a worker checks the input it reads
7. the content digest sees column types (the same values under another type)
8. --attest never records a partial reproduction"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.runs import cli_env, tiny_run

import scalequest_dataset
from scalequest_dataset.diffing.rows import column_differs
from scalequest_dataset.revisions.publish import publish
from scalequest_dataset.revisions.stores import StoreError, open_store
from scalequest_dataset.revisions.verify import Attestation
from scalequest_dataset.run import RunLayout, StageError, load_config
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.files import content_digest, read_json, sha256_file, write_json
from scalequest_dataset.run.plan import plan_stage
from scalequest_dataset.run.records import Manifest, stage_content
from scalequest_dataset.run.runner import finalize, status  # (`run.finalize` is also a module)

STAGE = "questions"


@pytest.fixture(scope="module")
def run(tmp_path_factory, pool) -> Path:
    return tiny_run(tmp_path_factory.mktemp("run") / "run", pool, stages=[STAGE]).root


def rewritten(run: Path, dest: Path, mutate) -> Path:
    """A copy of `run` whose first train shard went through `mutate(table) -> table`, written with pyarrow's
    defaults, and re-recorded consistently (file digests, content digest, the stage's content)."""
    shutil.copytree(run, dest)
    manifest = read_json(dest / "manifests" / f"{STAGE}.json")
    info = manifest["shards"][0]["files"]["train"]
    path = dest / "data" / STAGE / info["file"]
    table = mutate(pq.read_table(path))
    pq.write_table(table, path)
    info.update(sha256=sha256_file(path), bytes=path.stat().st_size, rows=table.num_rows,
                content=content_digest(table), writer=None)
    manifest["content"] = stage_content(rec.parse(Manifest, manifest, "rewritten").shards)
    write_json(dest / "manifests" / f"{STAGE}.json", manifest)
    return dest


def other_rows(table: pa.Table) -> pa.Table:
    queries = table.column("query").to_pylist()
    queries[0] += " "  # one space: what a lax comparison (stripped text, a recipe) would not see
    return table.set_column(table.schema.get_field_index("query"), "query", pa.array(queries))


# 1. Broken on purpose: `Manifest.identity` without the shards' content digests (the recipe alone) -> fails.
def test_publish_the_same_recipe_with_other_rows_is_other_data(run, tmp_path):
    store = tmp_path / "store"
    publish(run, store, [STAGE])
    other = rewritten(run, tmp_path / "other", other_rows)
    assert (read_json(other / "manifests" / f"{STAGE}.json")["recipe"]
            == read_json(run / "manifests" / f"{STAGE}.json")["recipe"])  # the same recipe, to the byte
    head = open_store(store).head()
    with pytest.raises(StoreError, match=r"already exists .* with other content"):
        publish(other, store, [STAGE])
    assert open_store(store).head() == head
    (result,) = publish(other, store, [STAGE], "v2")
    assert result.created and not result.reproduced


# 2. Broken on purpose: `_floats_differ` with np.isclose (rtol 1e-9) -> fails.
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_floats_one_ulp_apart_differ(dtype):
    values = np.array([1.0, 0.1, 1e30, -2.5, 1e-30, np.finfo(dtype).tiny], dtype=dtype)
    ulp = np.nextafter(values, np.array(np.inf, dtype=dtype))
    a, b = pa.array(values), pa.array(ulp)
    assert column_differs(a, b).tolist() == [True] * len(values)
    assert content_digest(pa.table({"x": a})) != content_digest(pa.table({"x": b}))


# 3. Broken on purpose: `FileCheck.status` returning "match" when the content digests agree -> fails.
def test_regenerate_the_same_rows_in_other_bytes_are_not_byte_identical(run, tmp_path, pool):
    other = rewritten(run, tmp_path / "other", lambda t: t)  # same rows, pyarrow's default writer options
    first = json.loads((other / "manifests" / f"{STAGE}.json").read_text())["shards"][0]["files"]["train"]
    assert first["sha256"] != json.loads((run / "manifests" / f"{STAGE}.json").read_text()
                                         )["shards"][0]["files"]["train"]["sha256"]
    publish(other, tmp_path / "store", [STAGE])
    report = scalequest_dataset.regenerate(f"{tmp_path / 'store'}@v1-{STAGE}", STAGE, shards=[0], pool=pool,
                                           scratch=tmp_path / "scratch")
    (shard,) = report.shards
    others = {f.split: "match" for f in shard.files if f.split != "train"}  # a split with no rows has no file
    assert {f.split: f.status for f in shard.files} == {"train": "same rows", **others}
    assert shard.matches and not shard.byte_identical
    assert report.to_dict()["byte_identical"] is False and "same rows" in report.describe()


# 4. Broken on purpose: `write_table` writing straight to `path` (no temporary name) -> fails.
KILL_INSIDE_A_WRITE = '''
import os, signal, sys
from pathlib import Path
import pyarrow as pa
from scalequest_dataset.run import files
real = files._HashingFile.write
def write(self, data):
    if self.size > 4096:  # the file is half written
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, data)
files._HashingFile.write = write
files.write_table(Path(sys.argv[1]), pa.table({"x": pa.array([str(i) * 50 for i in range(20000)])}))
'''


def test_a_kill_inside_a_write_leaves_no_file_under_the_final_name(tmp_path):
    final = tmp_path / "data" / "train-00000-of-00001.parquet"
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL_INSIDE_A_WRITE), str(final)], env=cli_env(),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == -9, res.stderr  # killed mid-write
    assert not final.exists()
    assert all(p.name.endswith(".tmp") for p in final.parent.iterdir())  # only a temporary was written


# 5. Broken on purpose: `verified_record` without the sha256 comparison -> fails (a manifest is written).
def test_finalize_checks_the_bytes_of_shards_damaged_after_their_last_check(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    layout = RunLayout(copy)
    layout.manifest(STAGE).unlink()  # as before finalize, every shard recorded complete
    shard = sorted(layout.data_dir(STAGE).glob("train-*.parquet"))[2]
    blob = bytearray(shard.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one bit, same size: checked after the worker's check
    shard.write_bytes(bytes(blob))
    (state, *_) = finalize(copy)
    assert not layout.manifest(STAGE).exists() and state.missing == [2]


# 6. Broken on purpose: `_read_range` without its sha256 comparison -> fails (the stage runs on damaged rows). The
#    damage comes after the stage was planned (planning checks its input too, once).
def test_a_worker_refuses_an_input_damaged_after_its_manifest(run, tmp_path, pool):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    layout = RunLayout(copy)
    plan_stage(layout, load_config(layout), "language")  # planned: the input was checked, once, here
    shard = sorted(layout.data_dir(STAGE).glob("train-*.parquet"))[0]
    table = other_rows(pq.read_table(shard))
    pq.write_table(table, shard)  # valid Parquet, other rows; the questions manifest is unchanged
    with pytest.raises(StageError, match=f"{shard.name} .input of this stage. does not match"):
        tiny_run(copy, pool, stages=["language"])
    assert not layout.manifest("language").exists()
    assert status(layout)[1].done == []


# 7. Broken on purpose: `content_digest` without the column's canonical type -> fails.
@pytest.mark.parametrize(("a", "b"), [
    (pa.array([1, 2, 3], pa.int64()), pa.array([1, 2, 3], pa.uint64())),
    (pa.array([1, 2, 3], pa.int64()), pa.array([1, 2, 3], pa.timestamp("us"))),
    (pa.array([1, 2, 3], pa.int32()), pa.array([1, 2, 3], pa.date32())),
    (pa.array([0, 1065353216], pa.int32()), pa.array([0.0, 1.0], pa.float32())),  # the same 32 bits
    (pa.array(["a", "b"], pa.string()), pa.array([b"a", b"b"], pa.binary())),
])
def test_the_content_digest_sees_the_column_type(a, b):
    if pa.types.is_floating(b.type):
        assert a.buffers()[1].to_pybytes() == b.buffers()[1].to_pybytes()  # the bytes really are the same
    assert content_digest(pa.table({"x": a})) != content_digest(pa.table({"x": b}))


# 8. Broken on purpose: `regenerate` without its "not attested" check -> fails (with the Attestation model's own
#    check as a second line, tested apart: a record of a partial reproduction is refused when read back too).
def test_attest_never_records_a_partial_reproduction(run, tmp_path, pool):
    store = tmp_path / "store"
    publish(rewritten(run, tmp_path / "other", other_rows), store, [STAGE])
    head = open_store(store).head()
    with pytest.raises(StageError, match="not attested: 1 shard"):
        scalequest_dataset.regenerate(f"{store}@v1-{STAGE}", STAGE, shards=[0, 1], pool=pool, attest=True,
                                      scratch=tmp_path / "scratch")
    assert open_store(store).head() == head  # nothing recorded
    body = {"stage": STAGE, "revision": "v1", "commit": head, "fingerprint": "f", "date": "2026-01-01",
            "compared": ["content digest"], "shards_checked": 2, "shards_matched": 1, "byte_identical": 1,
            "digests": {}, "environment": {}, "engines": {}, "environment_summary": ""}
    with pytest.raises(ValueError, match="only a full reproduction is attested"):
        Attestation.model_validate(body)
    assert Attestation.model_validate({**body, "shards_matched": 2}).shards_matched == 2

