"""run/finalize.py: a stage's manifest is written once every shard is complete and verified, from the shard
records alone, and rewritten only when its bytes would change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scalequest_dataset.run import RunLayout, load_config, records
from scalequest_dataset.run.finalize import _covered, finalize_stage, stage_state
from scalequest_dataset.run.plan import read_plan
from scalequest_dataset.run.records import Manifest, ShardRecord, stage_content

STAGES = ["questions", "language"]


@pytest.fixture(scope="module")
def base_run(tiny_runs) -> Path:
    return tiny_runs(stages=STAGES)  # shared by the session: tests change copies of it


@pytest.fixture
def layout(base_run, tmp_path) -> RunLayout:
    return RunLayout(shutil.copytree(base_run, tmp_path / "run"))


def test_the_manifest_adds_up_its_shard_records(layout):
    manifest = records.read(Manifest, layout.manifest("language"))
    plan = read_plan(layout, "language")
    recs = [records.read(ShardRecord, layout.record("language", s.index)) for s in plan.shards]
    assert [s.index for s in manifest.shards] == [r.index for r in recs] == list(range(len(plan.shards)))
    assert manifest.counts.rows_in == sum(r.rows_in for r in recs)
    assert manifest.counts.rows_out == sum(r.files["train"].rows for r in recs) == manifest.rows("train")
    drops: dict[str, int] = {}
    for r in recs:
        for reason, n in r.drops.items():
            drops[reason] = drops.get(reason, 0) + n
    assert manifest.counts.dropped == drops and list(manifest.counts.dropped) == sorted(drops)
    assert manifest.content == stage_content(recs)
    assert manifest.fingerprint == plan.fingerprint


def test_finalizing_again_leaves_the_manifest_untouched(layout):
    path = layout.manifest("language")
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    manifest = finalize_stage(layout, load_config(layout), "language")
    assert manifest == records.read(Manifest, path)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_a_lost_manifest_is_rewritten_byte_for_byte(layout):
    path = layout.manifest("language")
    blob = path.read_bytes()
    path.unlink()
    finalize_stage(layout, load_config(layout), "language")
    assert path.read_bytes() == blob


@pytest.mark.parametrize("damage", ["record", "shard"])
def test_a_stage_with_a_missing_or_damaged_shard_is_not_finalized(layout, damage):
    layout.manifest("language").unlink()
    if damage == "record":
        layout.record("language", 2).unlink()
    else:
        rec = records.read(ShardRecord, layout.record("language", 2))
        shard = layout.data_dir("language") / rec.files["train"].file
        shard.write_bytes(shard.read_bytes()[:-1] + bytes([shard.read_bytes()[-1] ^ 1]))
    assert finalize_stage(layout, load_config(layout), "language") is None
    assert not layout.manifest("language").exists()
    state = stage_state(layout, "language")
    assert state.missing == [2] and not state.complete and 2 not in state.done


def test_a_stage_not_planned_is_not_finalized_and_status_says_so(layout):
    assert finalize_stage(layout, load_config(layout), "dedup") is None
    state = stage_state(layout, "dedup")
    assert (state.shards, state.done, state.complete) == (None, [], False)


def test_wall_seconds_count_overlapping_shards_once_and_not_the_gaps_between():
    assert _covered([]) == 0
    assert _covered([(0, 10), (5, 15), (100, 101)]) == 16
    assert _covered([(5, 15), (0, 10), (2, 3)]) == 15  # order-free, a span inside another adds nothing
