"""What a run directory promises its users: `status` only reads, a refused config changes nothing, a no-op
re-run leaves every file as it was, and a config may change only for stages not planned yet."""

from __future__ import annotations

import subprocess

import pytest
from support.runs import CLI, cli_env, every_file, tiny_run

from scalequest_dataset.recipe.config import resolve_config
from scalequest_dataset.recipe.params import ConfigError
from scalequest_dataset.run import RunLayout, Runner, load_config, status
from scalequest_dataset.run.backends.local import LocalBackend

STAGES = ["questions", "language"]


@pytest.fixture
def run_dir(tmp_path_factory, pool):
    root = tmp_path_factory.mktemp("run")
    tiny_run(root, pool, stages=STAGES)
    return root


def test_status_only_reads(run_dir):
    before = every_file(run_dir)
    res = subprocess.run([*CLI, "status", str(run_dir)], capture_output=True, text=True, env=cli_env())
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("questions"))
    assert line.split()[1:] == ["5/5", "40", "complete"]
    assert [s.stage for s in status(RunLayout(run_dir)) if s.complete] == STAGES
    assert every_file(run_dir) == before


def test_a_no_op_rerun_leaves_every_file_as_it_was(run_dir, pool):
    before = every_file(run_dir)
    tiny_run(run_dir, pool, stages=STAGES)
    tiny_run(run_dir, pool, "engine.batch_size=3", stages=STAGES)  # throughput knobs may differ
    assert every_file(run_dir) == before


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


def test_unknown_stage_is_refused_before_anything_is_written(tmp_path):
    res = subprocess.run([*CLI, "run", "--preset", "tiny", "--out", str(tmp_path / "r"), "--stage", "nosuch"],
                         capture_output=True, text=True, env=cli_env())
    assert res.returncode == 2 and "nosuch" in res.stderr and "questions" in res.stderr
    assert not (tmp_path / "r").exists()
