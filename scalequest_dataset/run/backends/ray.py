"""The Ray backend: one actor per worker on a Ray cluster, each holding its engines for the whole run, pulling
shard indices as it frees up (a straggler never holds the stage).

`ray.init(address=...)` attaches to a running cluster (`--ray-address`, else RAY_ADDRESS) or starts a local
one. An actor gets `num_gpus=G` on a cluster with GPUs (G > 1 for tensor parallelism) and, on a CPU-only
cluster, its share of the cluster's cores (`num_cpus`, and as many torch threads). Actors are created at the
first stage and reused by every later one; their output goes to RUN/logs/ray-actor-<rank>.log.

Every actor calls `worker.run_shard`, so the bytes are those of any other backend. Ray Data LLM is not used:
it batches and reorders rows across our shards (see the README, "Why not Ray Data LLM").

Failures, as in the local backend: a shard whose actor died (process killed, node lost, out of memory) is
given to a fresh actor, a bounded number of times, the attempt recorded; a Python error in a stage (a
RayTaskError) fails the stage, naming the shard, the actor and the node. The run directory must be on storage
every node mounts at the same path, or on an object store every node reaches by the same URL (s3://..., with
the credentials and endpoint of each node's own environment, or of the job's runtime_env): each actor checks, before its first shard, that it sees the run
directory and a marker the driver wrote there, and that it runs the driver's code (the same digest of the
package's Python files: other code could write other bytes), and fails with a message naming its node."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import socket
import sys
import time
import traceback
import uuid
from collections import deque
from pathlib import Path
from typing import Any

from ...recipe.params import ConfigError

try:
    import ray
    from ray.exceptions import (
        LocalRayletDiedError,
        NodeDiedError,
        ObjectLostError,
        OutOfMemoryError,
        RayActorError,
        RayError,
        RayTaskError,
        WorkerCrashedError,
    )
except ImportError:  # pragma: no cover - depends on the installation
    raise ConfigError('the ray backend needs Ray: pip install "scalequest-dataset[ray]"') from None

from ...engines import EnginePool
from ..layout import RunLayout
from ..plan import StageError
from ..records import ShardRecord
from ..urlpath import is_url
from ..worker import WorkerContext, run_shard
from .base import Backend, Reporter, StageJob, check_workers
from .local import MAX_ATTEMPTS

# The ways an actor's process or node goes away: its shard left no partial file and is given to a fresh actor.
ACTOR_LOST = (RayActorError, WorkerCrashedError, NodeDiedError, OutOfMemoryError, LocalRayletDiedError,
              ObjectLostError)
# Environment flags that move numerics (README: Determinism), passed from the driver to every actor: on a cluster the
# driver did not start, actors do not inherit the driver's environment.
FORWARDED_ENV = ("VLLM_BATCH_INVARIANT", "CUBLAS_WORKSPACE_CONFIG")
POLL_SECONDS = 0.5  # how often the driver collects progress while shards run
PROGRESS_SECONDS = 0.5  # how often an actor sends it


class ActorSetupError(ConfigError):
    """An actor that cannot work for this driver: it does not see the driver's run directory (not on storage
    shared by every node), or it runs other scalequest_dataset code than the driver."""


class RayBackend(Backend):
    name = "ray"

    def __init__(self, workers: int = 1, gpus_per_worker: int = 1, address: str | None = None,
                 runtime_env: dict[str, Any] | None = None) -> None:
        """`address`: a running cluster (else RAY_ADDRESS, else a local cluster is started); `runtime_env`: the
        actors' Ray runtime environment (env_vars, pip, ...), merged with the job's."""
        check_workers(workers, gpus_per_worker)
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.address = address
        self.runtime_env = runtime_env or {}
        self.token = uuid.uuid4().hex  # names the driver's marker in each run directory
        self._started_ray = False
        self._actors: dict[int, Any] = {}
        self._options: dict[str, Any] = {}
        self._threads = 0
        self._gpus = 0
        self._sink: Any = None
        self._markers: set[str] = set()

    # ------------------------------------------------------------------------------------------ a stage

    def run(self, job: StageJob, reporter: Reporter) -> None:
        if not job.indices:
            return
        # an actor's working directory is not the driver's; a URL is the same everywhere
        run_dir = job.run_dir if is_url(job.run_dir) else os.path.abspath(job.run_dir)
        self._start()
        self._mark(run_dir)
        config = job.config.model_dump(mode="json")
        queue = deque((index, 1) for index in job.indices)
        idle = deque(sorted(self._actors))
        busy: dict[Any, tuple[int, int, int]] = {}  # the call's ObjectRef -> (rank, shard, attempt)
        failures: list[str] = []
        while queue or busy:
            while queue and idle and not failures:
                rank = idle.popleft()
                index, attempt = queue.popleft()
                ref = self._actors[rank].run.remote(run_dir, self.token, code_digest(), job.stage, index, config,
                                                    attempt)
                busy[ref] = (rank, index, attempt)
            if not busy:
                break
            ready, _ = ray.wait(list(busy), num_returns=1, timeout=POLL_SECONDS)
            self._collect_progress(reporter)
            for ref in ready:
                rank, index, attempt = busy.pop(ref)
                idle.append(rank)
                try:
                    record = ShardRecord.model_validate(ray.get(ref))
                except RayTaskError as exc:  # a Python error in the stage: not retried
                    failures.append(_python_error(job, run_dir, rank, index, exc))
                except ACTOR_LOST as exc:
                    if isinstance(exc, RayActorError) and exc.actor_init_failed:  # it could not even start
                        failures.append(f"ray-actor-{rank} failed to start: {_last_line(exc)} (actors import "
                                        "scalequest_dataset as installed on their node, or from the job's "
                                        "--working-dir)")
                        continue
                    self._replace(rank)
                    if attempt < MAX_ATTEMPTS:
                        queue.appendleft((index, attempt + 1))
                    else:
                        failures.append(f"shard {index} of {job.stage!r}: its Ray actor died in each of {attempt} "
                                        f"attempts (last: {_first_line(exc)})")
                else:
                    reporter.done(record)
        self._collect_progress(reporter)
        if failures:
            raise StageError("; ".join(failures))

    def _collect_progress(self, reporter: Reporter) -> None:
        if self._sink is None:
            return
        try:
            rows, tokens = ray.get(self._sink.take.remote())
        except RayError as exc:  # progress is for the eye: without it, finished shards still move the bar
            _warn(f"live progress is off: {_last_line(exc)}")
            self._sink = None
            return
        if rows or tokens:
            reporter.progress(rows, tokens)

    # ------------------------------------------------------------------------------------------ actors

    def _start(self) -> None:
        """Attach to (or start) Ray and create the actors, once per backend: they and their engines serve every
        stage of the run."""
        if self._actors:
            return
        if not ray.is_initialized():
            ray.init(address=self.address, logging_level="WARNING")
            self._started_ray = True
        self._options, self._threads, self._gpus = self._resources()
        self._sink = ray.remote(_ProgressSink).options(num_cpus=0).remote()
        self._actors = {rank: self._new_actor(rank) for rank in range(self.workers)}

    def _resources(self) -> tuple[dict[str, Any], int, int]:
        """Actor options: G GPUs each on a cluster with GPUs; else an equal share of the cluster's cores."""
        total = ray.cluster_resources()
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
        return ray.remote(_ShardActor).options(**self._options).remote(rank, self._threads, self._gpus, self._sink)

    def _replace(self, rank: int) -> None:
        """A fresh actor for a dead one (Ray places it wherever resources are: another node if its node is gone)."""
        with contextlib.suppress(Exception):  # it is gone already
            ray.kill(self._actors[rank], no_restart=True)
        self._actors[rank] = self._new_actor(rank)

    def _mark(self, run_dir: str) -> None:
        """The marker every actor must see in the run directory before its first shard there."""
        if run_dir in self._markers:
            return
        path = RunLayout(run_dir).shared_marker(self.token)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{socket.gethostname()}\n")
        self._markers.add(run_dir)

    def close(self) -> None:
        """Kill the actors (a shard they were running leaves no partial file); stop Ray if this backend started
        it."""
        for actor in [*self._actors.values(), self._sink]:
            if actor is not None:
                with contextlib.suppress(Exception):  # already dead, or Ray is gone
                    ray.kill(actor, no_restart=True)
        self._actors.clear()
        self._sink = None
        for run_dir in self._markers:
            RunLayout(run_dir).shared_marker(self.token).unlink(missing_ok=True)
        self._markers.clear()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


def _python_error(job: StageJob, run_dir: str, rank: int, index: int, exc: RayTaskError) -> str:
    cause = getattr(exc, "cause", None) or exc
    if isinstance(cause, ActorSetupError):
        return str(cause)
    log = RunLayout(run_dir).log(f"ray-actor-{rank}")
    return (f"shard {index} of {job.stage!r} failed in ray-actor-{rank}: {type(cause).__name__}: {_first_line(cause)} "
            f"(traceback in {log})")


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
        self.progress = _ThrottledProgress(sink)
        self.context = WorkerContext(EnginePool(), self.name, self.progress, gpus=gpus)
        self.checked: set[tuple[str, str]] = set()

    def run(self, run_dir: str, token: str, code: str, stage: str, index: int, config: dict[str, Any],
            attempt: int) -> dict[str, Any]:
        from ...recipe.config import build_config

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
        if (run_dir, token) in self.checked:
            return
        layout = RunLayout(run_dir)
        where = f"{self.name} on node {ray.util.get_node_ip_address()} ({socket.gethostname()})"
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
