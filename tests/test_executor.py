"""The determinism contract, byte for byte: re-run, worker count, batch size, kill and resume, tampering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scalequest_dataset.config import resolve_config
from scalequest_dataset.engines import EnginePool
from scalequest_dataset.executor import Run, ShardSlice, StageError
from scalequest_dataset.storage import read_json

CLI = [sys.executable, "-m", "scalequest_dataset.cli"]


def data_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "data").rglob("*.parquet"))}


def tiny_run(root: Path, pool: EnginePool, *overrides: str) -> Run:
    run = Run(root, resolve_config("tiny", list(overrides)), pool=pool, show_progress=False)
    run.run()
    return run


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pool) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("reference")
    tiny_run(root, pool)
    files = data_files(root)
    assert files, "the tiny run wrote no shards"
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
    tiny_run(tmp_path, pool, "seed=1")
    assert data_files(tmp_path) != reference


def test_three_workers_give_identical_bytes(tmp_path, reference):
    out = tmp_path / "w3"
    subprocess.run([*CLI, "run", "--preset", "tiny", "--out", str(out), "--workers", "3", "--no-progress"],
                   check=True, capture_output=True, text=True)
    assert data_files(out) == reference
    assert sorted(p.name for p in (out / "logs").glob("questions-worker*.log")) == [
        "questions-worker0.log", "questions-worker1.log", "questions-worker2.log"]


def test_slices_run_separately_then_finalize(tmp_path, pool, reference):
    config = resolve_config("tiny")
    for rank in (1, 0):  # any order; the last slice to finish writes the manifest
        run = Run(tmp_path, config, pool=pool, show_progress=False)
        run.run_stage("questions", ShardSlice(rank, 2))
    assert (tmp_path / "manifests" / "questions.json").exists()
    questions = {k: v for k, v in reference.items() if k.startswith("data/questions/")}
    assert {k: v for k, v in data_files(tmp_path).items() if k.startswith("data/questions/")} == questions


@pytest.mark.parametrize("stage", ["questions", "solvability"])
def test_sigkill_mid_stage_then_resume_gives_identical_bytes(tmp_path, pool, stage):
    overrides = ["--set", "stages.questions.generators.0.count=64", "--set", "rows_per_shard=4"]
    ref = tmp_path / "ref"
    tiny_run(ref, pool, *[o for o in overrides if o != "--set"])
    out = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, "run", "--preset", "tiny", "--out", str(out), "--no-progress", *overrides],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "state" / stage
    deadline = time.time() + 120
    while time.time() < deadline and len(list(state.glob("shard-*.json"))) < 3:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(state.glob("shard-*.json")))
    plan = read_json(state / "plan.json")
    assert 3 <= done < len(plan["shards"]), "the kill should land mid-stage"
    assert not (out / "manifests" / f"{stage}.json").exists()
    subprocess.run([*CLI, "run", "--preset", "tiny", "--out", str(out), "--no-progress", *overrides],
                   check=True, capture_output=True)
    assert data_files(out) == data_files(ref)
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete"])
def test_damaged_shard_is_detected_and_redone(tmp_path, pool, reference, damage):
    run = tiny_run(tmp_path, pool)
    shard = sorted((tmp_path / "data" / "questions").glob("*.parquet"))[1]
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "alter":
        blob = bytearray(shard.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        shard.write_bytes(bytes(blob))
    else:
        shard.unlink()
    status = {s["stage"]: s for s in run.status()}
    assert status["questions"]["shards_done"] == status["questions"]["shards"] - 1
    (tmp_path / "manifests" / "questions.json").unlink()
    run.run(["questions"])
    assert {k: v for k, v in data_files(tmp_path).items() if k.startswith("data/questions/")} == {
        k: v for k, v in reference.items() if k.startswith("data/questions/")}


def test_other_config_in_same_run_dir_is_refused(tmp_path, pool):
    tiny_run(tmp_path, pool)
    before = data_files(tmp_path)
    with pytest.raises(StageError, match="fingerprint"):
        tiny_run(tmp_path, pool, "seed=3")
    assert data_files(tmp_path) == before


def test_manifest_records_counts_hashes_and_environment(tmp_path, pool):
    run = tiny_run(tmp_path, pool)
    m = read_json(run.manifest_path("questions"))
    assert m["counts"]["rows_out"] == 40
    assert sum(s["files"]["train"]["rows"] for s in m["shards"]) == 40
    assert all(len(s["files"]["train"]["sha256"]) == 64 for s in m["shards"])
    assert m["models"]["generator:tiny-a"]["id"] == "builtin:tiny"
    assert m["engines"]["builtin:tiny"]["engine"] == "transformers"
    assert "torch" in m["environment"]["libraries"]
    assert m["cost"]["tokens"] > 0


def test_throughput_knobs_do_not_change_fingerprints():
    from scalequest_dataset.stages import STAGES

    base = STAGES["questions"](resolve_config("tiny")).fingerprint(None)
    assert STAGES["questions"](resolve_config("tiny", ["engine.batch_size=1"])).fingerprint(None) == base
    assert STAGES["questions"](resolve_config("tiny", ["seed=1"])).fingerprint(None) != base
    assert STAGES["questions"](resolve_config("tiny", ["stages.questions.top_p=0.9"])).fingerprint(None) != base
