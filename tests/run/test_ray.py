"""The Ray backend on one local Ray cluster for the session (2 CPUs): 1 and 2 actors write the in-process bytes;
an actor killed mid-shard has its shard redone (the retry recorded) while a Python error fails the stage at once;
an interrupted run resumes without redoing a shard; an actor that cannot see the run directory, or runs other
code than the driver, fails with a message naming its node."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.runs import CLI, cli_env, data_files

from scalequest_dataset.recipe.config import resolve_config
from scalequest_dataset.run import RunLayout, Runner, StageError
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.backends import Reporter, StageJob
from scalequest_dataset.run.records import Manifest, ShardRecord

pytest.importorskip("ray")
from scalequest_dataset.run.backends.ray import RayBackend  # only with Ray installed

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["questions", "language", "dedup", "solvability"]


@pytest.fixture(scope="module")
def reference(tiny_runs) -> Path:
    return tiny_runs(stages=STAGES)  # shared by the session (read only)


def ray_run(root: Path, backend: RayBackend, stages: list[str]) -> RunLayout:
    with backend:
        Runner(root, resolve_config("tiny"), backend, show_progress=False, say=lambda _: None).run(stages)
    return RunLayout(root)


def stage_files(root: Path, stages: list[str]) -> dict[str, bytes]:
    return {k: v for k, v in data_files(root).items() if k.split("/")[1] in stages}


def identities(root: Path, stages: list[str]) -> list[dict]:
    return [rec.read(Manifest, RunLayout(root).manifest(s)).identity() for s in stages]


def shard_records(root: Path, stage: str) -> list[ShardRecord]:
    return [rec.read(ShardRecord, p) for p in sorted(RunLayout(root).state_dir(stage).glob("shard-*.json"))]


def test_one_ray_actor_writes_the_in_process_bytes(ray_cluster, tmp_path, reference):
    ray_run(tmp_path, RayBackend(workers=1), STAGES)
    assert data_files(tmp_path) == data_files(reference)
    assert identities(tmp_path, STAGES) == identities(reference, STAGES)
    runs = [r.execution for s in STAGES for r in shard_records(tmp_path, s)]
    assert {(e.worker, e.gpus, e.attempt) for e in runs} == {("ray-actor-0", 0, 1)}
    pids = {e.pid for e in runs}
    assert len(pids) == 1 and os.getpid() not in pids  # one actor served every stage; the driver ran none
    assert (tmp_path / "logs" / "ray-actor-0.log").is_file()


def test_two_ray_actors_from_the_cli_write_the_in_process_bytes_and_print_the_cost(ray_cluster, tmp_path,
                                                                                    reference):
    out = tmp_path / "w2"
    res = subprocess.run([*CLI, "run", "--preset", "tiny", "--out", str(out), "--backend", "ray", "--workers", "2",
                          "--ray-address", ray_cluster, "--no-progress", *[a for s in STAGES for a in ("--stage", s)]],
                         env=cli_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert data_files(out) == data_files(reference)
    assert identities(out, STAGES) == identities(reference, STAGES)
    runs = [r.execution for s in STAGES for r in shard_records(out, s)]
    assert {e.worker for e in runs} == {"ray-actor-0", "ray-actor-1"}  # both actors ran shards
    assert len({e.pid for e in runs}) == 2
    cost = res.stdout[res.stdout.index("\ncost:"):].splitlines()[3:3 + len(STAGES)]
    assert [line.split()[0] for line in cost] == STAGES
    questions = rec.read(Manifest, RunLayout(out).manifest("questions"))
    assert cost[0].split()[1:] == [f"{questions.execution.cost.plan_seconds:.1f}",
                                   f"{questions.execution.cost.wall_seconds:.1f}",
                                   f"{questions.execution.cost.worker_seconds:.1f}", "0.0", "0.0",
                                   f"{questions.tokens.prompt:,}", f"{questions.tokens.completion:,}"]


def test_the_ray_job_script_attaches_through_ray_address(ray_cluster, tmp_path, reference):
    """What `ray job submit ... -- python tools/ray_job.py ...` runs: inside a job, Ray sets RAY_ADDRESS."""
    out = tmp_path / "job"
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "ray_job.py"), "--preset", "tiny", "--out", str(out),
                          "--stage", "questions"], env=cli_env(RAY_ADDRESS=ray_cluster), capture_output=True,
                         text=True, timeout=900, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert data_files(out) == stage_files(reference, ["questions"])
    assert {r.execution.worker for r in shard_records(out, "questions")} == {"ray-actor-0"}
    assert "\ncost" in res.stdout


# Test support loaded into the actors' processes through PYTHONPATH in their runtime environment (the production
# code has no such hook), aimed at shard 2 of `questions`, whose `train` file is written before its `dropped` file:
# in "kill" mode the actor kills itself (SIGKILL) the first time with the `dropped` file written under its temporary
# name and not yet renamed (a partial shard on disk), noting that temporary file; in "raise" mode the stage raises a
# Python error every time. Each attempt is noted.
SITECUSTOMIZE = """
import os, signal
mode, notes = os.environ["SCALEQUEST_TEST_FAULT"], os.environ["SCALEQUEST_TEST_NOTES"]
TARGET = "train-00002-of-00005.parquet"  # (a split with no rows writes no file: train always does)
import scalequest_dataset.run.worker as worker
real_write, real_replace = worker.write_rows, os.replace
def write_rows(path, rows, features):
    if path.name == TARGET and "questions" in str(path):
        with open(notes, "a") as f:
            f.write(f"{os.getpid()}\\n")
        if mode == "raise":
            raise ValueError("boom in the stage")
    return real_write(path, rows, features)
def replace(src, dst, *args, **kwargs):
    if mode == "kill" and str(dst).endswith(TARGET) and "questions" in str(dst):
        with open(notes) as f:
            first = len(f.read().split()) == 1
        if first:
            with open(notes + ".tmpfile", "w") as f:
                f.write(str(src))
            os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst, *args, **kwargs)
worker.write_rows = write_rows
os.replace = replace
"""


def faulty_backend(tmp_path: Path, mode: str, workers: int) -> tuple[RayBackend, Path]:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    notes = tmp_path / "attempts"
    env = {"PYTHONPATH": f"{hooks}:{ROOT}", "SCALEQUEST_TEST_FAULT": mode, "SCALEQUEST_TEST_NOTES": str(notes)}
    return RayBackend(workers=workers, runtime_env={"env_vars": env}), notes


def test_a_ray_actor_killed_mid_shard_has_its_shard_redone_and_the_retry_recorded(ray_cluster, tmp_path,
                                                                                   reference):
    backend, notes = faulty_backend(tmp_path, "kill", workers=2)
    out = tmp_path / "run"
    ray_run(out, backend, ["questions"])
    assert len(notes.read_text().split()) == 2, "the actor should have been killed once, then the shard redone"
    partial = Path((tmp_path / "attempts.tmpfile").read_text())  # the file the killed attempt left
    assert partial.name.endswith(".tmp") and partial.parent == RunLayout(out).data_dir("questions")
    assert data_files(out) == stage_files(reference, ["questions"])
    assert not partial.exists() and not list(out.rglob("*.tmp"))  # the killed attempt's partial file is gone
    attempts = {r.index: r.execution.attempt for r in shard_records(out, "questions")}
    assert attempts == {0: 1, 1: 1, 2: 2, 3: 1, 4: 1}  # shard 2 redone by a fresh actor, and the record says so


def test_a_python_error_in_a_stage_fails_it_naming_the_shard_and_is_not_retried(ray_cluster, tmp_path):
    backend, notes = faulty_backend(tmp_path, "raise", workers=1)
    out = tmp_path / "run"
    with pytest.raises(StageError) as info:
        ray_run(out, backend, ["questions"])
    message = str(info.value)
    assert "shard 2 of 'questions' failed in ray-actor-0: ValueError: boom in the stage" in message
    assert str(RunLayout(out).log("ray-actor-0")) in message
    assert "Traceback" in RunLayout(out).log("ray-actor-0").read_text()
    assert len(notes.read_text().split()) == 1  # tried once: a Python error is no reason to retry


class Recording(RayBackend):
    """The Ray backend, noting which shards each stage hands it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.jobs: list[tuple[str, list[int]]] = []

    def run(self, job: StageJob, reporter: Reporter) -> None:
        self.jobs.append((job.stage, list(job.indices)))
        super().run(job, reporter)


def test_an_interrupted_ray_run_resumes_and_no_shard_is_done_twice(ray_cluster, tmp_path, reference, monkeypatch):
    from scalequest_dataset.run import runner

    stages = ["questions", "language"]
    real, seen = runner.Progress.shard_done, []

    def interrupt_after_two(self, record):  # Ctrl-C on the driver after two shards came back
        real(self, record)
        seen.append(record.index)
        if len(seen) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner.Progress, "shard_done", interrupt_after_two)
    with pytest.raises(KeyboardInterrupt):
        ray_run(tmp_path, RayBackend(workers=2), stages)
    monkeypatch.undo()
    layout = RunLayout(tmp_path)
    before = {p.name: p.read_bytes() for p in layout.state_dir("questions").glob("shard-*.json")}
    assert 2 <= len(before) < 5, "the run should have stopped part-way"  # the shard in flight may have finished

    backend = Recording(workers=2)
    ray_run(tmp_path, backend, stages)
    assert stage_files(tmp_path, stages) == stage_files(reference, stages)
    assert identities(tmp_path, stages) == identities(reference, stages)
    done_before = sorted(int(name[6:11]) for name in before)
    assert backend.jobs[0] == ("questions", sorted(set(range(5)) - set(done_before)))  # only the missing shards
    after = {p.name: p.read_bytes() for p in layout.state_dir("questions").glob("shard-*.json")}
    assert {k: after[k] for k in before} == before  # the finished shards were not run again
    assert {r.execution.attempt for s in stages for r in shard_records(tmp_path, s)} == {1}


# A Ray worker that sees another folder at the run directory's path, as on a node without the shared storage:
# it runs in its own mount namespace where that path is an empty tmpfs, or a stale copy of a run directory.
HIDING_PYTHON = """#!/bin/bash
exec unshare --user --map-root-user --mount bash -c '
if [ -n "$SCALEQUEST_TEST_COPY" ]; then mount --bind "$SCALEQUEST_TEST_COPY" "$SCALEQUEST_TEST_HIDE"
else mount -t tmpfs hidden "$SCALEQUEST_TEST_HIDE"; fi && exec "$0" "$@"' {python} "$@"
"""


def _namespaces_work() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _namespaces_work(), reason="needs unprivileged mount namespaces (unshare)")
@pytest.mark.parametrize("view", ["empty", "stale copy"])
def test_an_actor_that_cannot_see_the_run_directory_fails_naming_it_and_its_node(ray_cluster, tmp_path, reference,
                                                                                view):
    python = tmp_path / "hiding-python"
    python.write_text(HIDING_PYTHON.format(python=sys.executable))
    python.chmod(0o755)
    out = tmp_path / "run"
    out.mkdir()
    env = {"SCALEQUEST_TEST_HIDE": str(out), "SCALEQUEST_TEST_COPY": str(reference) if view == "stale copy" else ""}
    backend = RayBackend(workers=1, runtime_env={"py_executable": str(python), "env_vars": env})
    with pytest.raises(StageError) as info:
        ray_run(out, backend, ["questions"])
    message = str(info.value)
    assert str(out) in message and "ray-actor-0 on node" in message
    assert "storage every node mounts at the same path" in message
    assert ("cannot see the run directory" if view == "empty" else "sees a different folder") in message
    assert not list(RunLayout(out).state_dir("questions").glob("shard-*.json"))


def test_an_actor_running_other_code_than_the_driver_fails_naming_its_node(ray_cluster, tmp_path, monkeypatch):
    from scalequest_dataset.run.backends import ray as ray_backend

    # The driver's copy of the package differs (on one machine, actors import the driver's sys.path first).
    monkeypatch.setattr(ray_backend, "code_digest", lambda: "0" * 64)
    with pytest.raises(StageError) as info:
        ray_run(tmp_path / "run", RayBackend(workers=1), ["questions"])
    message = str(info.value)
    assert "ray-actor-0 on node" in message
    assert f"runs other scalequest_dataset code ({ROOT / 'scalequest_dataset'}) than the driver" in message
    assert not list(RunLayout(tmp_path / "run").state_dir("questions").glob("shard-*.json"))


def test_cpu_actors_reserve_and_compute_with_their_share_of_the_cores(ray_cluster):
    """On a CPU cluster (2 cores here) an actor holds cores//workers CPUs in Ray's accounting and computes with as
    many torch threads: without the reservation two actors would share one core's worth, without the threads
    each would compute with Ray's default (1)."""
    import ray

    def threads_and_cpus(actor_self):  # runs inside the actor (defined here: pickled by value)
        import torch

        return torch.get_num_threads(), ray.get_runtime_context().get_assigned_resources().get("CPU")

    for workers, share in ((1, 2), (2, 1)):
        with RayBackend(workers=workers) as backend:
            backend._start()
            seen = [ray.get(a.__ray_call__.remote(threads_and_cpus), timeout=120)
                    for a in backend._actors.actors.values()]
        assert seen == [(share, share)] * workers, (workers, seen)
