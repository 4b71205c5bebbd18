"""The determinism contract, byte for byte: re-run, batch size, kill and resume, damaged shards."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from support.runs import CLI, cli_env, data_files, tiny_run

from scalequest_dataset.run import RunLayout
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.records import Manifest, Plan


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pool) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("reference")
    tiny_run(root, pool)
    files = data_files(root)
    assert len(files) > 25, "the tiny run wrote too few shards"  # no empty `dropped` files since issue 22
    return files


def test_rerun_gives_identical_bytes(tmp_path, pool, reference):
    tiny_run(tmp_path, pool)
    assert data_files(tmp_path) == reference


def test_batch_size_does_not_move_bytes(tmp_path, pool, reference):
    tiny_run(tmp_path / "b1", pool, "engine.batch_size=1")
    tiny_run(tmp_path / "b32", pool, "engine.batch_size=32")
    assert data_files(tmp_path / "b1") == reference
    assert data_files(tmp_path / "b32") == reference


def test_seed_moves_bytes(tmp_path, pool, reference):
    tiny_run(tmp_path, pool, "seed=1", stages=["questions"])
    ours = data_files(tmp_path)
    assert ours and all(ours[k] != reference[k] for k in ours if k.startswith("data/questions/train"))


@pytest.mark.parametrize("stage", ["questions", "solvability"])
def test_sigkill_mid_stage_then_resume_gives_identical_bytes(tmp_path, pool, stage):
    overrides = ["stages.questions.generators.0.count=64", "rows_per_shard=4"]
    ref = tmp_path / "ref"
    tiny_run(ref, pool, *overrides, stages=["questions", "language", "dedup", "solvability"])
    out = tmp_path / "killed"
    cmd = [*CLI, "run", "--preset", "tiny", "--out", str(out), "--no-progress", "--stage", "questions",
           "--stage", "language", "--stage", "dedup", "--stage", "solvability",
           *[a for o in overrides for a in ("--set", o)]]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=cli_env())
    state = RunLayout(out).state_dir(stage)
    deadline = time.time() + 180
    while time.time() < deadline and len(list(state.glob("shard-*.json"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(state.glob("shard-*.json")))
    plan = rec.read(Plan, RunLayout(out).plan(stage))
    assert 3 <= done < len(plan.shards), "the kill should land mid-stage"
    assert not RunLayout(out).manifest(stage).exists()
    subprocess.run(cmd, check=True, capture_output=True, env=cli_env())
    assert data_files(out) == data_files(ref)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete"])
def test_damaged_shard_is_detected_and_redone(tmp_path, pool, reference, damage):
    layout = tiny_run(tmp_path, pool, stages=["questions"])
    shard = sorted(layout.data_dir("questions").glob("train-*.parquet"))[1]
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "alter":
        blob = bytearray(shard.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        shard.write_bytes(bytes(blob))
    else:
        shard.unlink()
    from scalequest_dataset.run import status

    (questions, *_) = status(layout)
    assert questions.missing == [1]
    tiny_run(tmp_path, pool, stages=["questions"])
    assert {k: v for k, v in data_files(tmp_path).items() if k.startswith("data/questions/")} == {
        k: v for k, v in reference.items() if k.startswith("data/questions/")}


def test_manifest_records_recipe_result_and_execution(tmp_path, pool):
    layout = tiny_run(tmp_path, pool, stages=["questions", "language"])
    m = rec.read(Manifest, layout.manifest("questions"))
    assert m.counts.rows_out == 40 and m.rows("train") == 40
    assert all(len(f.sha256) == 64 and f.content.startswith("sha256:") for f in m.files().values())
    assert m.recipe.models["generator:tiny-a"].id == "builtin:tiny"
    assert m.recipe.models["generator:tiny-a"].revision.startswith("sha256:")  # a content digest, not a path
    assert "batch_size" not in str(m.recipe.config)  # throughput knobs are not part of the recipe
    assert m.execution.engines()["builtin:tiny"]["engine"] == "transformers"
    (env,) = m.execution.environments.values()
    assert "torch" in env["libraries"]
    assert m.tokens.completion > 0 and m.tokens.prompt > 0
    assert m.execution.cost.worker_seconds > 0 and m.execution.cost.wall_seconds > 0
    lang = rec.read(Manifest, layout.manifest("language"))
    assert lang.recipe.input is not None
    assert (lang.recipe.input.fingerprint, lang.recipe.input.content) == (m.fingerprint, m.content)


def test_throughput_knobs_do_not_change_fingerprints():
    from scalequest_dataset.recipe.config import resolve_config
    from scalequest_dataset.run.plan import config_key

    base = config_key(resolve_config("tiny"), "questions")
    assert config_key(resolve_config("tiny", ["engine.batch_size=1"]), "questions") == base
    assert config_key(resolve_config("tiny", ["seed=1"]), "questions") != base
    assert config_key(resolve_config("tiny", ["stages.questions.top_p=0.9"]), "questions") != base
    assert config_key(resolve_config("tiny", ["stages.responses.samples=2"]), "questions") == base
