"""run/plan.py: a stage's plan is resolved once and persisted; it depends only on the input and `rows_per_shard`
(a group is never split); a plan is written once (the first writer wins); inputs are checked before use; a
config that contradicts a planned stage is refused with nothing written."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.runs import CLI, cli_env, every_file, tiny_run

from scalequest_dataset.recipe.config import resolve_config
from scalequest_dataset.recipe.params import ConfigError
from scalequest_dataset.run import RunLayout, Runner, load_config, records
from scalequest_dataset.run.backends.local import LocalBackend
from scalequest_dataset.run.plan import (
    StageError,
    _cut,
    _write_once,
    plan_stage,
    read_manifest,
    verified_inputs,
)
from scalequest_dataset.run.records import Plan, ShardSpec

STAGES = ["questions", "language"]


@pytest.fixture(scope="module")
def base_run(tiny_runs) -> Path:
    return tiny_runs(stages=STAGES)  # shared by the session: tests change copies of it


@pytest.fixture
def run_dir(base_run, tmp_path) -> Path:
    """A copy of the module's run (mtimes kept) that a test may change."""
    return Path(shutil.copytree(base_run, tmp_path / "run"))


# ---------------------------------------------------------------------------------------------- the shard plan


def cut(keys: list[str], size: int, group_key: str | None, tmp_path: Path, per_group: bool = False
        ) -> list[tuple[int, int]]:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": keys}), path)
    manifest = SimpleNamespace(rows=lambda split: len(keys))
    stage = SimpleNamespace(group_key=group_key, one_row_per_group=per_group)
    return [(s.start, s.stop) for s in _cut(stage, manifest, [path], size)]


def test_rows_are_cut_in_runs_of_rows_per_shard(tmp_path):
    assert cut(list("abcdefghij"), 4, None, tmp_path) == [(0, 4), (4, 8), (8, 10)]
    assert cut(list("abcdefghij"), 10, None, tmp_path) == [(0, 10)]


def test_a_group_is_never_split_across_shards(tmp_path):
    keys = list("aaabbccccd")
    assert cut(keys, 2, "id", tmp_path) == [(0, 3), (3, 5), (5, 9), (9, 10)]
    assert cut(keys, 100, "id", tmp_path) == [(0, 10)]


def test_a_stage_that_writes_one_row_per_group_is_cut_by_groups(tmp_path):
    """`default` writes one row per question: rows_per_shard questions a shard, whatever their sizes."""
    keys = list("aaabbccccdeeeee")
    assert cut(keys, 2, "id", tmp_path, per_group=True) == [(0, 5), (5, 10), (10, 15)]
    assert cut(keys, 1, "id", tmp_path, per_group=True) == [(0, 3), (3, 5), (5, 9), (9, 10), (10, 15)]


def test_the_plan_does_not_move_with_throughput_knobs(run_dir):
    layout = RunLayout(run_dir)
    before = layout.plan("language").read_bytes()
    for knob in ("engine.batch_size=3", "engine.batch_size=64"):
        assert plan_stage(layout, resolve_config("tiny", [knob]), "language") == records.read(Plan, layout.plan("language"))
    assert layout.plan("language").read_bytes() == before
    with pytest.raises(StageError, match="another config"):
        plan_stage(layout, resolve_config("tiny", ["rows_per_shard=3"]), "language")


def test_a_plan_is_written_once_and_the_first_writer_wins(tmp_path):
    first = Plan(stage="questions", fingerprint="a", config="c", input=None, models={},
                 shards=[ShardSpec(index=0, rows=1)])
    second = first.model_copy(update={"fingerprint": "b"})
    path = tmp_path / "state" / "questions" / "plan.json"
    assert _write_once(path, first) == first
    assert _write_once(path, second) == first  # a concurrent planner adopts what is there
    assert records.read(Plan, path) == first and list(path.parent.iterdir()) == [path]


# ---------------------------------------------------------------------------------------------- inputs


def test_an_input_shard_with_a_flipped_byte_is_refused_naming_it(run_dir):
    layout = RunLayout(run_dir)
    manifest = read_manifest(layout, "questions")
    assert len(verified_inputs(layout, manifest)) == len(manifest.split_files("train"))
    victim = layout.data_dir("questions") / manifest.split_files("train")[1].file
    blob = bytearray(victim.read_bytes())
    blob[len(blob) // 2] ^= 1
    victim.write_bytes(bytes(blob))  # same size, other bytes
    with pytest.raises(StageError) as info:
        verified_inputs(layout, manifest)
    assert str(victim) in str(info.value) and "input stage 'questions'" in str(info.value)


def test_a_stage_whose_input_is_not_complete_names_the_stage_to_run_first(run_dir):
    layout = RunLayout(run_dir)
    with pytest.raises(StageError, match=r"its input stage 'dedup'.*run `--stage dedup` first"):
        plan_stage(layout, load_config(layout), "solvability")
    assert not layout.state_dir("solvability").exists()


# ---------------------------------------------------------------------------------------------- the config


@pytest.mark.parametrize("override", ["seed=3", "stages.language.rule=langid", "rows_per_shard=5"])
def test_a_refused_config_changes_nothing(run_dir, pool, override):
    before = every_file(run_dir)
    with pytest.raises(ConfigError, match="another config") as info:
        tiny_run(run_dir, pool, override, stages=STAGES)
    assert override.split("=")[0] in str(info.value)  # it names what differs
    assert every_file(run_dir) == before
    res = subprocess.run([*CLI, "run", "--preset", "tiny", "--out", str(run_dir), "--set", override, "--stage",
                          "questions", "--no-progress"], capture_output=True, text=True, env=cli_env())
    assert res.returncode == 2 and "another config" in res.stderr
    assert every_file(run_dir) == before


def test_a_stage_not_planned_yet_may_take_new_settings(run_dir, pool):
    before = every_file(run_dir)
    config = resolve_config("tiny", ["stages.responses.samples=2"])
    notes = []
    with LocalBackend(pool=pool) as backend:
        Runner(run_dir, config, backend, show_progress=False, say=notes.append).run(STAGES)
    assert notes and "responses" in notes[0]
    assert load_config(RunLayout(run_dir)).stages.responses.samples == 2
    after = every_file(run_dir)
    assert {k: v for k, v in after.items() if k != "config.yaml"} == {k: v for k, v in before.items()
                                                                        if k != "config.yaml"}
