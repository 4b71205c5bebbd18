"""Every backend writes the in-process bytes: a backend of threads running shards in reverse order, local worker
processes with a device each, and `--shard i/N` slices run concurrently then finalized."""

from __future__ import annotations

import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from support.runs import CLI, cli_env, data_files

from scalequest_dataset.engines import EnginePool
from scalequest_dataset.recipe.config import resolve_config
from scalequest_dataset.run import RunLayout, Runner
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.backends import Backend, Reporter, StageJob
from scalequest_dataset.run.records import Manifest, ShardRecord
from scalequest_dataset.run.worker import WorkerContext, run_shard

STAGES = ["questions", "language", "dedup", "solvability"]


@pytest.fixture(scope="module")
def reference(tiny_runs) -> dict[str, bytes]:
    return data_files(tiny_runs(stages=STAGES))  # the session's run of these stages


class ReverseThreads(Backend):
    """Pending shards in reverse order, two at a time on threads, each thread with its own engines."""

    name = "reverse-threads"

    def __init__(self) -> None:
        self.local = threading.local()
        self.pools: list[EnginePool] = []
        self.order: list[tuple[str, int]] = []

    def _context(self) -> WorkerContext:
        if not hasattr(self.local, "context"):
            pool = EnginePool()
            self.pools.append(pool)
            self.local.context = WorkerContext(pool, threading.current_thread().name)
        return self.local.context

    def run(self, job: StageJob, reporter: Reporter) -> None:
        def one(index: int) -> ShardRecord:
            self.order.append((job.stage, index))
            return run_shard(job.run_dir, job.stage, index, self._context(), config=job.config)

        with ThreadPoolExecutor(2) as threads:
            for record in threads.map(one, sorted(job.indices, reverse=True)):
                reporter.done(record)

    def close(self) -> None:
        for pool in self.pools:
            pool.close()


def test_a_backend_of_threads_in_reverse_order_gives_the_reference_bytes(tmp_path, reference):
    with ReverseThreads() as backend:
        Runner(tmp_path, resolve_config("tiny"), backend, show_progress=False).run(STAGES)
    assert data_files(tmp_path) == reference
    questions = [i for s, i in backend.order if s == "questions"]
    assert questions[:2] == [4, 3], "the shards really ran in reverse order"


def test_two_local_workers_get_a_device_each_and_really_run_shards(tmp_path, reference):
    out = tmp_path / "w2"
    proc = subprocess.Popen([*CLI, "run", "--preset", "tiny", "--out", str(out), "--workers", "2", "--no-progress",
                             *[a for s in STAGES for a in ("--stage", s)]],
                            env=cli_env(CUDA_VISIBLE_DEVICES="0,1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert data_files(out) == reference
    layout = RunLayout(out)
    runs = [rec.read(ShardRecord, p).execution for s in STAGES for p in sorted(layout.state_dir(s).glob("shard-*.json"))]
    workers = {(e.worker, e.pid, e.devices) for e in runs}
    assert {w for w, _, _ in workers} == {"local-0", "local-1"}, workers  # both workers ran shards
    assert {d for _, _, d in workers} == {"0", "1"}  # each saw its own device
    assert proc.pid not in {pid for _, pid, _ in workers}  # the parent ran none
    assert len({pid for _, pid, _ in workers}) == 2
    logs = sorted(p.name for p in layout.logs.glob("worker-*.log"))
    assert logs == ["worker-0.log", "worker-1.log"]


def test_slices_in_three_concurrent_processes_then_finalize_equal_the_in_process_run(tmp_path, reference):
    out = tmp_path / "slices"
    for stage in STAGES:
        procs = [subprocess.Popen([*CLI, "run", "--preset", "tiny", "--out", str(out), "--stage", stage,
                                   "--shard", f"{i}/3", "--no-progress"], env=cli_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(3)]
        for p in procs:
            _, err = p.communicate(timeout=600)
            assert p.returncode == 0, err[-3000:]
        res = subprocess.run([*CLI, "finalize", str(out)], env=cli_env(), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert RunLayout(out).manifest(stage).is_file()
    assert data_files(out) == reference
    layout = RunLayout(out)
    slices = {rec.read(ShardRecord, p).execution.pid for p in layout.state_dir("questions").glob("shard-*.json")}
    assert len(slices) == 3  # three processes each ran their slice
    m = rec.read(Manifest, layout.manifest("solvability"))
    assert json.loads(json.dumps(m.counts.model_dump()))["rows_in"] == 40


def test_on_a_cpu_machine_each_worker_gets_its_own_share_of_the_cores(monkeypatch):
    from scalequest_dataset.run.backends.local import worker_devices

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    envs = worker_devices(2, 1)
    assert [e["VLLM_CPU_OMP_THREADS_BIND"] for e in envs] == ["0,1", "2,3"]  # disjoint cores
    assert [e["OMP_NUM_THREADS"] for e in envs] == [e["SCALEQUEST_THREADS"] for e in envs] == ["2", "2"]
    assert all("CUDA_VISIBLE_DEVICES" not in e for e in envs)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-3")  # the user's binding is left alone
    assert all("VLLM_CPU_OMP_THREADS_BIND" not in e for e in worker_devices(2, 1))


def test_a_local_worker_can_start_processes_and_is_stopped_with_them(tmp_path):
    """vLLM starts its engine core (and, for tensor parallelism, one process per GPU) inside the worker: a daemonic
    worker could not (Python refuses children to daemonic processes). Stopping a worker ends its process group."""
    import os
    import signal
    import time

    from scalequest_dataset.run.backends.local import _Process

    proc = _Process(0, {}, tmp_path / "logs")
    try:
        assert proc.process.daemon is False
        pid = proc.process.pid
        deadline = time.monotonic() + 120
        while os.getpgid(pid) != pid and time.monotonic() < deadline:  # it made its own group
            time.sleep(0.1)
        assert os.getpgid(pid) == pid
    finally:
        proc.stop(now=True)
    assert not proc.process.is_alive() and proc.process.exitcode == -signal.SIGTERM


FAKE_BACKEND = '''
from scalequest_dataset.run.backends.base import Backend


class FakeBackend(Backend):
    name = "fake"
    summary = "a backend added in a test"

    def __init__(self, workers=1, gpus_per_worker=1, speed="slow"):
        self.workers, self.speed = workers, speed

    @classmethod
    def add_arguments(cls, group):
        group.add_argument("--fake-speed", default="slow", help="how fast")

    @classmethod
    def from_args(cls, args):
        return cls(workers=args.workers, speed=args.fake_speed)

    def run(self, job, reporter):
        raise NotImplementedError
'''


def test_a_new_backend_is_one_file_and_one_line_its_options_beside_it(tmp_path, monkeypatch):
    """The CLI takes a backend's options from the backend (no branch on its name in cli.py); an option given with
    another backend is refused, naming the one it goes with."""
    from scalequest_dataset import cli
    from scalequest_dataset.recipe.params import ConfigError
    from scalequest_dataset.run import backends

    (tmp_path / "fake_backend.py").write_text(FAKE_BACKEND)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(backends.BACKENDS, "fake", "fake_backend:FakeBackend")  # the one line
    parser = cli.build_parser()
    run_help = next(a for a in parser._actions if a.dest == "command").choices["run"].format_help()
    assert "{fake,local,ray}" in run_help and "--fake-speed" in run_help and "a backend added in a test" in run_help
    args = parser.parse_args(["run", "--out", "x", "--backend", "fake", "--workers", "3", "--fake-speed", "fast"])
    made = backends.from_args(args)
    assert (type(made).__name__, made.workers, made.speed) == ("FakeBackend", 3, "fast")
    with pytest.raises(ConfigError, match="--fake-speed goes with --backend fake"):
        backends.from_args(parser.parse_args(["run", "--out", "x", "--fake-speed", "fast"]))
    with pytest.raises(ConfigError, match="--ray-address goes with --backend ray"):
        backends.from_args(parser.parse_args(["run", "--out", "x", "--ray-address", "h:6379"]))
    assert type(backends.from_args(parser.parse_args(["run", "--out", "x"]))).__name__ == "LocalBackend"
