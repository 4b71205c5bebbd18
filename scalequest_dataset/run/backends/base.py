"""The one small interface every backend implements. A backend knows nothing of rows, Parquet or stages: it is
handed a job (a run directory, a stage name, shard indices) and makes `worker.run_shard` happen for each index
somewhere, reporting progress and records as they come. Since a shard's bytes depend only on the run
directory and its index, every backend writes the same bytes, at any worker count and in any order.

A backend with workers runs the shared loop of `dispatch.py` (shards handed out as workers free up, a dead
worker's shard retried, errors naming the shard) and supplies only its `Workers` (below). It declares its own command-line
options beside it (`add_arguments`, `from_args`). The CLI reads them when it builds its parser, so this module
and every backend module import nothing heavy at module level (not the executor, not pydantic, not Ray): what a
backend needs to run it imports when it runs."""

from __future__ import annotations

import argparse
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

if TYPE_CHECKING:
    from ...recipe.config import RunConfig
    from ..records import ShardRecord


class StageJob(NamedTuple):  # (not a dataclass: the CLI imports this module at start-up, and one costs ~1 ms)
    run_dir: str
    stage: str
    indices: list[int]
    config: RunConfig  # this invocation's config (throughput knobs included); its data part is the run dir's


class Reporter:
    """Where a backend reports: rows/tokens as they are generated, and each finished shard's record."""

    def __init__(self, progress: Callable[[int, int], None] | None = None,
                 done: Callable[[ShardRecord], None] | None = None) -> None:
        self._progress, self._done = progress, done

    def progress(self, rows: int, tokens: int) -> None:
        if self._progress:
            self._progress(rows, tokens)

    def done(self, record: ShardRecord) -> None:
        if self._done:
            self._done(record)


def check_workers(workers: int, gpus_per_worker: int) -> None:
    """The worker options every backend takes, checked before anything starts."""
    from ...recipe.params import ConfigError

    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if gpus_per_worker < 1:
        raise ConfigError(f"--gpus-per-worker must be >= 1, got {gpus_per_worker}")


class Backend(ABC):
    """Runs shards. Lives for a whole `scalequest run` (workers and their loaded engines are reused from stage
    to stage); use it as a context manager so workers are stopped. Making one checks its arguments and starts
    nothing (no process, no cluster): that happens at its first `run`."""

    name: ClassVar[str]
    summary: ClassVar[str]  # what `--backend NAME` means, for the CLI's help

    @classmethod  # noqa: B027 - most backends have no options of their own
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        """This backend's own command-line options, beyond `--workers` and `--gpus-per-worker` (every backend's).
        One given with another backend is refused (`backends.from_args`)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Backend:
        """The backend as the command line asks for it."""
        return cls(workers=args.workers, gpus_per_worker=args.gpus_per_worker)  # type: ignore[call-arg]

    @abstractmethod
    def run(self, job: StageJob, reporter: Reporter) -> None:
        """Run every shard of the job; return when all are complete, raise StageError naming the shard if one
        cannot be."""

    def planning_processes(self) -> int:
        """Processes a stage's whole-input pass may use at plan time, on the planning machine: as many as the
        backend has workers (they wait for the plan meanwhile), at most its CPUs."""
        return max(1, min(getattr(self, "workers", 1), os.cpu_count() or 1))

    def close(self) -> None:  # noqa: B027 - a backend without workers has nothing to stop
        """Stop workers and free their engines."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------- workers
# A backend with workers hands them to the one dispatch loop (dispatch.py) as `Workers`.

# What workers report, from `Workers.wait` (NamedTuples: the CLI imports this module at start-up, and a dataclass
# costs ~1 ms to define).


class Generated(NamedTuple):
    """Rows and tokens generated since the last report: the progress bar."""

    rows: int
    tokens: int


class Done(NamedTuple):
    rank: int
    record: ShardRecord


class Died(NamedTuple):
    """The worker's process went away mid-shard: its shard is given again."""

    rank: int
    cause: str  # "killed by SIGKILL; see RUN/logs/worker-0.log"


class Raised(NamedTuple):
    """A Python error in the stage's code: the stage fails, naming the shard."""

    rank: int
    error: str  # "ValueError: boom"
    traceback: str  # where the traceback is


class Unfit(NamedTuple):
    """A worker that cannot work for this job at all (it cannot start, or see the run directory): the stage fails
    with this message, whatever the shard."""

    rank: int
    message: str


Event = Generated | Done | Died | Raised | Unfit


class WorkerLost(Exception):
    """Raised by `Workers.submit`: the worker was dead before it took the shard."""


class Workers(ABC):
    """A backend's workers, by rank, as the loop sees them."""

    noun: ClassVar[str]  # what a worker is called in a failure ("worker", "Ray actor")

    @abstractmethod
    def ranks(self) -> list[int]:
        """Every worker, idle when the loop starts."""

    @abstractmethod
    def label(self, rank: int) -> str:
        """The worker's name in messages and shard records ("local-0", "ray-actor-0")."""

    @abstractmethod
    def submit(self, job: StageJob, rank: int, index: int, attempt: int) -> None:
        """Hand shard `index` to worker `rank` (idle) and return at once; raise WorkerLost if it is dead."""

    @abstractmethod
    def wait(self, busy: Collection[int]) -> Iterable[Event]:
        """Block until one of the `busy` workers reports something (or a short poll interval passes), then return
        what they reported. A worker is idle again once it reported Done, Died, Raised or Unfit."""

    @abstractmethod
    def replace(self, rank: int) -> None:
        """A fresh worker of that rank for a dead one."""

    def finish(self) -> Iterable[Event]:
        """What is left to report once no shard runs (progress sent late)."""
        return ()
