"""The one dispatch loop every backend with workers runs (local processes, Ray actors): what is guaranteed about
handing out shards lives here once, and a backend supplies only its `Workers` (base.py).

- A shard goes to the first worker free (a slow shard never holds the others), lowest index first.
- A worker that dies mid-shard (killed, out of memory, its node lost) is replaced, and its shard - which left no
  partial file, writes being atomic - is given again, at most MAX_ATTEMPTS times in all; each attempt is passed
  to `worker.run_shard`, which records it in the shard's record. A worker found dead before it took a shard
  is replaced and the shard handed on without counting an attempt.
- A Python error in a stage is not retried: the stage fails, naming the shard, the worker and where its
  traceback is (ShardFailed). A worker that cannot work at all fails the stage with its own message
  (StageError: an environment to fix, not a failed shard). After a failure no further shard is handed out;
  those running finish.
- Progress (rows, tokens generated) and each finished shard's record go to the reporter as they come."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from .base import Died, Done, Generated, Raised, WorkerLost, Workers

if TYPE_CHECKING:
    from .base import Reporter, StageJob

MAX_ATTEMPTS = 3  # a shard whose worker died this many times fails the stage


def dispatch(job: StageJob, reporter: Reporter, workers: Workers) -> None:
    """Run every shard of `job` on `workers`; return when all are complete, raise naming the shards that cannot be."""
    from ..plan import ShardFailed, StageError

    queue = deque((index, 1) for index in job.indices)  # (shard, attempt)
    idle = deque(workers.ranks())
    busy: dict[int, tuple[int, int]] = {}  # rank -> (shard, attempt)
    failed: list[str] = []  # shards that failed: their stage fails
    unfit: list[str] = []  # workers that cannot work: the stage fails
    while queue or busy:
        while queue and idle and not (failed or unfit):
            rank = idle.popleft()
            index, attempt = queue.popleft()
            try:
                workers.submit(job, rank, index, attempt)
            except WorkerLost:  # it died while idle: not this shard's attempt
                workers.replace(rank)
                idle.append(rank)
                queue.appendleft((index, attempt))
                continue
            busy[rank] = (index, attempt)
        if not busy:
            break
        for event in workers.wait(list(busy)):
            if isinstance(event, Generated):
                reporter.progress(event.rows, event.tokens)
                continue
            index, attempt = busy.pop(event.rank)
            idle.append(event.rank)
            if isinstance(event, Done):
                reporter.done(event.record)
            elif isinstance(event, Died):
                workers.replace(event.rank)
                if attempt < MAX_ATTEMPTS:
                    queue.appendleft((index, attempt + 1))
                else:
                    failed.append(f"shard {index} of {job.stage!r}: its {workers.noun} died in each of {attempt} "
                                  f"attempts (last: {event.cause})")
            elif isinstance(event, Raised):
                failed.append(f"shard {index} of {job.stage!r} failed in {workers.label(event.rank)}: {event.error} "
                              f"(traceback in {event.traceback})")
            else:
                unfit.append(event.message)
    for event in workers.finish():
        if isinstance(event, Generated):
            reporter.progress(event.rows, event.tokens)
    if failed:
        raise ShardFailed("; ".join(failed + unfit))
    if unfit:
        raise StageError("; ".join(unfit))
