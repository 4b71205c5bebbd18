"""The one dispatch loop both backends run (run/backends/dispatch.py), with scripted workers: a dead worker's shard
is given again with the next attempt number, at most MAX_ATTEMPTS times; a worker found dead before it took a
shard costs no attempt; a Python error fails the stage naming the shard and is not retried; after a failure no
new shard is handed out. With real workers the same loop is tested by killing a local worker process
(test_worker.py) and a Ray actor (test_ray.py) mid-shard: the redone shard's record says attempt 2."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from types import SimpleNamespace

import pytest

from scalequest_dataset.run.backends import Reporter, StageJob
from scalequest_dataset.run.backends.base import (
    Died,
    Done,
    Event,
    Generated,
    Raised,
    Unfit,
    WorkerLost,
    Workers,
)
from scalequest_dataset.run.backends.dispatch import MAX_ATTEMPTS, dispatch
from scalequest_dataset.run.plan import ShardFailed, StageError


class Scripted(Workers):
    """Workers whose every call (shard, attempt) ends as `script` says: "done" (the default), "dies", "raises",
    "unfit"; `lost_on_submit`: (shard, attempt) calls whose worker is found dead when handed the shard."""

    noun = "scripted worker"

    def __init__(self, workers: int, script: dict[tuple[int, int], str] | None = None,
                 lost_on_submit: set[tuple[int, int]] | None = None) -> None:
        self.count = workers
        self.script = script or {}
        self.lost_on_submit = set(lost_on_submit or ())
        self.running: dict[int, tuple[int, int]] = {}  # rank -> (shard, attempt)
        self.calls: list[tuple[int, int, int]] = []  # (rank, shard, attempt) in the order handed out
        self.replaced: list[int] = []

    def ranks(self) -> list[int]:
        return list(range(self.count))

    def label(self, rank: int) -> str:
        return f"scripted-{rank}"

    def submit(self, job: StageJob, rank: int, index: int, attempt: int) -> None:
        if (index, attempt) in self.lost_on_submit:
            self.lost_on_submit.discard((index, attempt))
            raise WorkerLost
        assert len(self.calls) < 50, "the loop hands out shards without end"
        self.calls.append((rank, index, attempt))
        self.running[rank] = (index, attempt)

    def wait(self, busy: Collection[int]) -> Iterable[Event]:
        rank = min(busy)  # one worker reports at a time, lowest rank first
        index, attempt = self.running.pop(rank)
        outcome = self.script.get((index, attempt), "done")
        record = SimpleNamespace(index=index, execution=SimpleNamespace(attempt=attempt))
        return [Generated(1, 10), {"done": Done(rank, record), "dies": Died(rank, "killed by SIGKILL"),
                                  "raises": Raised(rank, "ValueError: boom", "LOG"),
                                  "unfit": Unfit(rank, f"scripted-{rank} cannot see the run directory")}[outcome]]

    def replace(self, rank: int) -> None:
        self.replaced.append(rank)


def run(workers: Scripted, shards: int = 4) -> tuple[list, list]:
    done, progress = [], []
    reporter = Reporter(lambda rows, tokens: progress.append((rows, tokens)), done.append)
    dispatch(StageJob("RUN", "questions", list(range(shards)), None), reporter, workers)  # type: ignore[arg-type]
    return done, progress


def test_a_dead_workers_shard_is_given_again_with_the_next_attempt():
    workers = Scripted(2, {(1, 1): "dies"})
    done, progress = run(workers)
    assert sorted((r.index, r.execution.attempt) for r in done) == [(0, 1), (1, 2), (2, 1), (3, 1)]
    assert (1, 2) in [(i, a) for _, i, a in workers.calls] and workers.replaced == [1]
    assert len(progress) == 5  # every report reached the reporter


def test_a_shard_whose_worker_dies_every_time_fails_the_stage_after_the_bound():
    workers = Scripted(1, {(2, a): "dies" for a in range(1, MAX_ATTEMPTS + 1)})
    with pytest.raises(ShardFailed, match=rf"shard 2 of 'questions': its scripted worker died in each of "
                                          rf"{MAX_ATTEMPTS} attempts \(last: killed by SIGKILL\)"):
        run(workers)
    assert [a for _, i, a in workers.calls if i == 2] == list(range(1, MAX_ATTEMPTS + 1))
    assert 3 not in [i for _, i, _ in workers.calls]  # nothing handed out after the failure


def test_a_worker_found_dead_before_it_took_a_shard_costs_no_attempt():
    workers = Scripted(2, lost_on_submit={(0, 1)})
    done, _ = run(workers)
    assert {r.execution.attempt for r in done} == {1} and workers.replaced == [0]


def test_a_python_error_fails_the_stage_naming_the_shard_and_is_not_retried():
    workers = Scripted(1, {(1, 1): "raises"})
    with pytest.raises(ShardFailed, match=r"^shard 1 of 'questions' failed in scripted-0: ValueError: boom "
                                          r"\(traceback in LOG\)$"):
        run(workers)
    assert [(i, a) for _, i, a in workers.calls] == [(0, 1), (1, 1)]  # not retried; nothing handed out after it


def test_a_worker_that_cannot_work_fails_the_stage_with_its_own_message():
    with pytest.raises(StageError, match=r"^scripted-0 cannot see the run directory$") as info:
        run(Scripted(1, {(0, 1): "unfit"}))
    assert not isinstance(info.value, ShardFailed)  # an environment to fix (exit 2), not a failed shard


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_both_backends_retry_a_dead_workers_shard_through_the_one_loop(backend, tmp_path, monkeypatch):
    """Each backend's own `run`, with its workers (processes, actors) swapped for scripted ones: the retry and the
    attempt recorded are the loop's, the same for both."""
    workers = Scripted(2, {(1, 1): "dies"})
    if backend == "local":
        from scalequest_dataset.run.backends import local

        monkeypatch.setattr(local, "_Processes", lambda *args: workers)
        made = local.LocalBackend(workers=2)
    else:
        pytest.importorskip("ray")
        from scalequest_dataset.run.backends import ray

        monkeypatch.setattr(ray, "_ray", lambda: SimpleNamespace(is_initialized=lambda: True))
        monkeypatch.setattr(ray, "_Actors", lambda *args: workers)
        made = ray.RayBackend(workers=2)
    done: list = []
    made.run(StageJob(str(tmp_path), "questions", list(range(4)), None), Reporter(done=done.append))  # type: ignore[arg-type]
    assert sorted((r.index, r.execution.attempt) for r in done) == [(0, 1), (1, 2), (2, 1), (3, 1)]
    assert workers.replaced == [1]
