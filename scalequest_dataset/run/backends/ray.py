"""The Ray backend: one actor per worker on a Ray cluster, each holding its engines for the whole run, pulling
shard indices as it frees up (a straggler never holds the stage).

`ray.init(address=...)` attaches to a running cluster (`--ray-address`, else RAY_ADDRESS) or starts a local
one. An actor gets `num_gpus=G` on a cluster with GPUs (G > 1 for tensor parallelism) and, on a CPU-only
cluster, its share of the cluster's cores (`num_cpus`, and as many torch threads). Actors are created at the
first stage and reused by every later one; their output goes to RUN/logs/ray-actor-<rank>.log.

Every actor calls `worker.run_shard`, so the bytes are those of any other backend. Ray Data LLM is not used:
it batches and reorders rows across our shards (see the README, "Why not Ray Data LLM").

Failures are the shared loop's (dispatch.py), as in the local backend: a shard whose actor died (process killed,
node lost, out of memory) is given to a fresh actor, a bounded number of times, the attempt recorded; a Python
error in a stage (a RayTaskError) fails the stage, naming the shard, the actor and its log. The run directory must be on storage
every node mounts at the same path, or on an object store every node reaches by the same URL (s3://..., with
the credentials and endpoint of each node's own environment, or of the job's runtime_env): each actor checks, before its first shard, that it sees the run
directory and a marker the driver wrote there, and that it runs the driver's code (the same digest of the
package's Python files: other code could write other bytes), and fails with a message naming its node."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import os
import re
import sys
import time
import traceback
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import (
    Backend,
    Died,
    Done,
    Event,
    Generated,
    Raised,
    Reporter,
    StageJob,
    Unfit,
    Workers,
    check_workers,
)

if TYPE_CHECKING:  # Ray and the executor on first use: the CLI reads this module's options at start-up
    from ray.exceptions import RayTaskError

# Environment flags that move numerics (README: Determinism), passed from the driver to every actor: on a cluster the
# driver did not start, actors do not inherit the driver's environment.
FORWARDED_ENV = ("VLLM_BATCH_INVARIANT", "CUBLAS_WORKSPACE_CONFIG")
POLL_SECONDS = 0.5  # how often the driver collects progress while shards run
PROGRESS_SECONDS = 0.5  # how often an actor sends it


def _ray() -> Any:
    import ray

    return ray


def actor_lost() -> tuple[type[BaseException], ...]:
    """The ways an actor's process or node goes away: its shard left no partial file and is given to a fresh actor."""
    from ray.exceptions import (
        LocalRayletDiedError,
        NodeDiedError,
        ObjectLostError,
        OutOfMemoryError,
        RayActorError,
        WorkerCrashedError,
    )

    return (RayActorError, WorkerCrashedError, NodeDiedError, OutOfMemoryError, LocalRayletDiedError, ObjectLostError)


class ActorSetupError(Exception):
    """An actor that cannot work for this driver: it does not see the driver's run directory (not on storage
    shared by every node), or it runs other scalequest_dataset code than the driver. The stage fails with its
    message (a StageError: an environment to fix)."""


class RayBackend(Backend):
    name = "ray"
    summary = "a Ray cluster: one actor per worker"

    def __init__(self, workers: int = 1, gpus_per_worker: int = 1, address: str | None = None,
                 runtime_env: dict[str, Any] | None = None) -> None:
        """`address`: a running cluster (else RAY_ADDRESS, else a local cluster is started); `runtime_env`: the
        actors' Ray runtime environment (env_vars, pip, ...), merged with the job's."""
        check_workers(workers, gpus_per_worker)
        if importlib.util.find_spec("ray") is None:
            from ...recipe.params import ConfigError

            raise ConfigError('the ray backend needs Ray: pip install "scalequest-dataset[ray]"')
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.address = address
        self.runtime_env = runtime_env or {}
        import uuid

        self.token = uuid.uuid4().hex  # names the driver's marker in each run directory
        self._started_ray = False
        self._actors: _Actors | None = None
        self._markers: set[str] = set()

    @classmethod
    def add_arguments(cls, group: argparse._ArgumentGroup) -> None:
        group.add_argument("--ray-address", help="a running Ray cluster (default: RAY_ADDRESS, else a local one)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RayBackend:
        return cls(workers=args.workers, gpus_per_worker=args.gpus_per_worker, address=args.ray_address)

    # ------------------------------------------------------------------------------------------ a stage

    def run(self, job: StageJob, reporter: Reporter) -> None:
        from .dispatch import dispatch

        if not job.indices:
            return
        self._start()
        assert self._actors is not None
        self._mark(_actor_dir(job.run_dir))
        dispatch(job, reporter, self._actors)

    # ------------------------------------------------------------------------------------------ actors

    def _start(self) -> None:
        """Attach to (or start) Ray and create the actors, once per backend: they and their engines serve every
        stage of the run."""
        if self._actors is not None:
            return
        ray = _ray()
        if not ray.is_initialized():
            ray.init(address=self.address, logging_level="WARNING")
            self._started_ray = True
        self._actors = _Actors(self.workers, self.gpus_per_worker, self.runtime_env, self.token)

    def _mark(self, run_dir: str) -> None:
        """The marker every actor must see in the run directory before its first shard there."""
        import socket

        from ..layout import RunLayout

        if run_dir in self._markers:
            return
        path = RunLayout(run_dir).shared_marker(self.token)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{socket.gethostname()}\n")
        self._markers.add(run_dir)

    def close(self) -> None:
        """Kill the actors (a shard they were running leaves no partial file); stop Ray if this backend started
        it."""
        from ..layout import RunLayout

        if self._actors is not None:
            self._actors.kill()
            self._actors = None
        for run_dir in self._markers:
            RunLayout(run_dir).shared_marker(self.token).unlink(missing_ok=True)
        self._markers.clear()
        if self._started_ray:
            _ray().shutdown()
            self._started_ray = False


def _actor_dir(run_dir: str) -> str:
    """The run directory as actors name it: an actor's working directory is not the driver's; a URL is the same
    everywhere."""
    from ..urlpath import is_url

    return run_dir if is_url(run_dir) else os.path.abspath(run_dir)


class _Actors(Workers):
    """The actors, as the dispatch loop sees them: each call is an ObjectRef to wait on; progress comes from a
    small sink actor they all send to."""

    noun = "Ray actor"

    def __init__(self, workers: int, gpus_per_worker: int, runtime_env: dict[str, Any], token: str) -> None:
        ray = _ray()
        self.workers, self.gpus_per_worker, self.runtime_env, self.token = workers, gpus_per_worker, runtime_env, token
        self.options, self.threads, self.gpus = self._resources()
        self.sink: Any = ray.remote(_ProgressSink).options(num_cpus=0).remote()
        self.actors: dict[int, Any] = {rank: self._new_actor(rank) for rank in range(workers)}
        self.calls: dict[Any, int] = {}  # a running call's ObjectRef -> its actor's rank
        self.run_dir = ""

    def _resources(self) -> tuple[dict[str, Any], int, int]:
        """Actor options: G GPUs each on a cluster with GPUs; else an equal share of the cluster's cores."""
        total = _ray().cluster_resources()
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        env.update(self.runtime_env.get("env_vars", {}))
        runtime_env = {**self.runtime_env, "env_vars": env} if env else dict(self.runtime_env)
        options: dict[str, Any] = {"max_restarts": 0, "max_task_retries": 0}
        if runtime_env:
            options["runtime_env"] = runtime_env
        if total.get("GPU", 0) >= 1:
            need = self.workers * self.gpus_per_worker
            if need > total["GPU"]:
                _warn(f"{self.workers} actors with {self.gpus_per_worker} GPU(s) each need {need} GPUs; the "
                      f"cluster has {total['GPU']:g} now: the others wait until GPUs are free or added")
            return {**options, "num_gpus": self.gpus_per_worker, "num_cpus": 1}, 0, self.gpus_per_worker
        cpus = int(total.get("CPU", 1))
        share = max(1, cpus // self.workers)
        if self.workers > cpus:
            _warn(f"{self.workers} CPU actors on a cluster of {cpus} cores: the others wait until cores are free")
        return {**options, "num_gpus": 0, "num_cpus": share}, share, 0

    def _new_actor(self, rank: int) -> Any:
        return _ray().remote(_ShardActor).options(**self.options).remote(rank, self.threads, self.gpus, self.sink)

    def ranks(self) -> list[int]:
        return sorted(self.actors)

    def label(self, rank: int) -> str:
        return f"ray-actor-{rank}"

    def submit(self, job: StageJob, rank: int, index: int, attempt: int) -> None:
        self.run_dir = _actor_dir(job.run_dir)
        ref = self.actors[rank].run.remote(self.run_dir, self.token, code_digest(), job.stage, index,
                                           job.config.model_dump(mode="json"), attempt)
        self.calls[ref] = rank

    def wait(self, busy: Collection[int]) -> Iterable[Event]:
        from ray.exceptions import RayActorError, RayTaskError

        from ..records import ShardRecord

        ray = _ray()
        ready, _ = ray.wait([ref for ref, rank in self.calls.items() if rank in busy], num_returns=1,
                            timeout=POLL_SECONDS)
        events: list[Event] = list(self._progress())
        for ref in ready:
            rank = self.calls.pop(ref)
            try:
                events.append(Done(rank, ShardRecord.model_validate(ray.get(ref))))
            except RayTaskError as exc:  # a Python error in the stage: not retried
                events.append(_python_error(self.run_dir, rank, exc))
            except actor_lost() as exc:
                if isinstance(exc, RayActorError) and exc.actor_init_failed:  # it could not even start
                    events.append(Unfit(rank, f"ray-actor-{rank} failed to start: {_last_line(exc)} (actors import "
                                              "scalequest_dataset as installed on their node, or from the job's "
                                              "--working-dir)"))
                else:
                    events.append(Died(rank, _first_line(exc)))
        return events

    def finish(self) -> Iterable[Event]:
        return self._progress()

    def _progress(self) -> list[Event]:
        from ray.exceptions import RayError

        if self.sink is None:
            return []
        try:
            rows, tokens = _ray().get(self.sink.take.remote())
        except RayError as exc:  # progress is for the eye: without it, finished shards still move the bar
            _warn(f"live progress is off: {_last_line(exc)}")
            self.sink = None
            return []
        return [Generated(rows, tokens)] if rows or tokens else []

    def replace(self, rank: int) -> None:
        """A fresh actor for a dead one (Ray places it wherever resources are: another node if its node is gone)."""
        with contextlib.suppress(Exception):  # it is gone already
            _ray().kill(self.actors[rank], no_restart=True)
        self.actors[rank] = self._new_actor(rank)

    def kill(self) -> None:
        for actor in [*self.actors.values(), self.sink]:
            if actor is not None:
                with contextlib.suppress(Exception):  # already dead, or Ray is gone
                    _ray().kill(actor, no_restart=True)
        self.actors.clear()
        self.calls.clear()
        self.sink = None


def _python_error(run_dir: str, rank: int, exc: RayTaskError) -> Event:
    from ..layout import RunLayout

    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, ActorSetupError):
        return Unfit(rank, str(cause))
    return Raised(rank, f"{type(cause).__name__}: {_first_line(cause)}", str(RunLayout(run_dir).log(f"ray-actor-{rank}")))


def _first_line(exc: BaseException) -> str:
    return (_plain(exc).splitlines() or [type(exc).__name__])[0]


def _last_line(exc: BaseException) -> str:
    """The exception line at the end of a Ray error that carries a remote traceback."""
    return (_plain(exc).splitlines() or [type(exc).__name__])[-1].strip()


def _plain(exc: BaseException) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()


@functools.cache
def code_digest() -> str:
    """sha256 over the package's Python files (path and bytes): the code a process runs, whatever its install."""
    root = Path(__file__).resolve().parents[2]
    import hashlib

    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(f"{path.relative_to(root).as_posix()}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def _warn(text: str) -> None:
    print(f"ray backend: {text}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- inside Ray


class _ProgressSink:
    """Rows and tokens the actors generated since the driver last asked (a tiny actor: no CPU reserved)."""

    def __init__(self) -> None:
        self.rows = self.tokens = 0

    def add(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens

    def take(self) -> tuple[int, int]:
        out = (self.rows, self.tokens)
        self.rows = self.tokens = 0
        return out


class _ThrottledProgress:
    """An engine's progress callback inside an actor: summed, and sent to the sink at most every
    PROGRESS_SECONDS (a call per batch would be one RPC per batch)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.rows = self.tokens = 0
        self.sent = time.monotonic()

    def __call__(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        if time.monotonic() - self.sent >= PROGRESS_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.rows or self.tokens:
            self.sink.add.remote(self.rows, self.tokens)  # fire and forget
        self.rows = self.tokens = 0
        self.sent = time.monotonic()


class _ShardActor:
    """One worker: its engines for the whole run, one shard at a time."""

    def __init__(self, rank: int, threads: int, gpus: int, sink: Any) -> None:
        self.name = f"ray-actor-{rank}"
        if threads:  # a CPU actor: as many torch threads as cores it holds, set before an engine loads
            os.environ["OMP_NUM_THREADS"] = str(threads)
            import torch

            torch.set_num_threads(threads)
        from ...engines import EnginePool
        from ..worker import WorkerContext

        self.progress = _ThrottledProgress(sink)
        self.context = WorkerContext(EnginePool(), self.name, self.progress, gpus=gpus)
        self.checked: set[tuple[str, str]] = set()

    def run(self, run_dir: str, token: str, code: str, stage: str, index: int, config: dict[str, Any],
            attempt: int) -> dict[str, Any]:
        from ...recipe.config import build_config
        from ..worker import run_shard

        self._check(run_dir, token, code)
        try:
            record = run_shard(run_dir, stage, index, self.context, config=build_config(config), attempt=attempt)
        except Exception:
            traceback.print_exc()
            raise
        finally:
            self.progress.flush()
        return record.model_dump(mode="json")

    def _check(self, run_dir: str, token: str, code: str) -> None:
        """Before the first shard in a run directory: run the driver's code, see the run directory and the
        driver's marker in it (a folder of the same name on this node's local disk is not it); then send this
        actor's output to its log there."""
        import socket

        from ..layout import RunLayout

        if (run_dir, token) in self.checked:
            return
        layout = RunLayout(run_dir)
        where = f"{self.name} on node {_ray().util.get_node_ip_address()} ({socket.gethostname()})"
        advice = ("the run directory must be on storage every node mounts at the same path (NFS, Lustre, a shared "
                  "volume)")
        if layout.remote:
            advice = ("every node needs the object store's endpoint and credentials in its environment "
                      "(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID or AWS_PROFILE, ...; or the job's runtime_env)")
        if code != code_digest():
            raise ActorSetupError(f"{where} runs other scalequest_dataset code ({Path(__file__).parents[2]}) than "
                                  "the driver: install the same version on every node, or submit the job with "
                                  "`ray job submit --working-dir .` so that every actor runs the driver's copy")
        try:
            seen = layout.is_run_dir(run_dir)
        except Exception as exc:  # an object store refused or could not be reached from this node
            raise ActorSetupError(f"{where} cannot read the run directory {run_dir} ({type(exc).__name__}: "
                                  f"{_first_line(exc)}): {advice}") from None
        if not seen:
            raise ActorSetupError(f"{where} cannot see the run directory {run_dir} (no config.yaml there): {advice}")
        if not layout.shared_marker(token).is_file():
            marker = layout.shared_marker(token).relative_to(layout.root)
            raise ActorSetupError(f"{where} sees a different folder at {run_dir} than the driver does (the "
                                   f"marker {marker} the driver wrote is missing): {advice}")
        layout.logs.mkdir(parents=True, exist_ok=True)
        fd = os.open(layout.log(self.name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        self.checked.add((run_dir, token))
