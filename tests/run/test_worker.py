"""One shard at a time: rows the engine refuses go to `dropped`, and a worker killed mid-shard leaves no partial
file and its shard is redone by another worker."""

from __future__ import annotations

import subprocess
import textwrap

import pytest
from support.runs import CLI, cli_env, data_files, tiny_run

from scalequest_dataset.engines import Completion, Request, Sampling
from scalequest_dataset.engines.base import generate_guarded, score_guarded
from scalequest_dataset.run import RunLayout
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.records import Manifest, ShardRecord


def test_an_over_long_prompt_lands_in_dropped_with_its_reason(tmp_path, pool):
    # tiny-b's system prompt is longer than the tiny model's context (2048 tokens); tiny-a's rows are untouched.
    layout = tiny_run(tmp_path, pool, "stages.questions.generators.tiny-b.system_prompt=" + "count to ten " * 700,
                      stages=["questions"])
    m = rec.read(Manifest, layout.manifest("questions"))
    assert m.counts.dropped == {"prompt-too-long": 16}
    assert m.counts.rows_out == 24
    import pyarrow.parquet as pq

    dropped = [r for f in m.split_files("dropped") for r in pq.read_table(layout.data_dir("questions") / f.file).to_pylist()]
    assert {r["generator"] for r in dropped} == {"tiny-b"} and len(dropped) == 16
    assert all(r["drop_reason"] == "prompt-too-long" and "context is 2048" in r["drop_detail"] for r in dropped)


class FlakyEngine:
    """Fails any batch that holds a prompt containing "bad"; answers the others with their prompt."""

    def __init__(self, fail_all: bool = False) -> None:
        self.fail_all = fail_all
        self.calls: list[int] = []

    def context_length(self) -> int:
        return 100

    def prompt_length(self, prompt: str) -> int:
        return len(prompt.split())

    def score_length(self, conversation) -> int:
        return sum(len(m["content"].split()) for m in conversation)

    def generate(self, requests, progress=None, done=None):  # reports nothing as it goes: the guard does at the end
        self.calls.append(len(requests))
        if self.fail_all or any("bad" in r.prompt for r in requests):
            raise RuntimeError("device-side assert")
        return [Completion(r.prompt.upper(), 1, 1, "stop") for r in requests]

    def score(self, conversations, progress=None):
        if any("bad" in c[0]["content"] for c in conversations):
            raise RuntimeError("nan in logits")
        return [float(len(c[0]["content"])) for c in conversations]


def requests(*prompts: str) -> list[Request]:
    return [Request(p, Sampling(), i) for i, p in enumerate(prompts)]


def test_one_failing_request_fails_alone_and_the_others_are_kept():
    engine = FlakyEngine()
    out = generate_guarded(engine, requests("a", "bad one", "c", "word " * 150))
    assert [c.text for c in out] == ["A", "", "C", ""]
    assert [c.error for c in out] == [None, "engine-error", None, "prompt-too-long"]
    assert "device-side assert" in out[1].detail and "150 tokens" in out[3].detail
    assert engine.calls == [3, 1, 2, 1, 1]  # the batch, then halves of it down to the bad request (engines/test_guarded.py)
    scores = score_guarded(engine, [[{"role": "user", "content": c}] for c in ("x", "bad", "yz")])
    assert [(s.value, s.error) for s in scores] == [(1.0, None), (None, "engine-error"), (2.0, None)]


def test_an_engine_that_fails_every_request_fails_the_stage():
    with pytest.raises(RuntimeError, match="device-side assert"):
        generate_guarded(FlakyEngine(fail_all=True), requests("a", "b"))


# A worker process that kills itself (SIGKILL) in the middle of writing shard 2 of `questions`, the first time:
# after its `train` file is written, before its record (a shard that drops nothing writes no `dropped` file). Test support, loaded into the
# run's processes through PYTHONPATH; the production code has no such hook.
SITECUSTOMIZE = '''
import os, signal
marker = os.environ["SCALEQUEST_TEST_KILL_MARKER"]
import scalequest_dataset.run.worker as worker
real = worker.write_rows
def write_rows(path, rows, features):
    written = real(path, rows, features)
    if path.name == "train-00002-of-00005.parquet" and "questions" in str(path):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return written
        os.kill(os.getpid(), signal.SIGKILL)
    return written
worker.write_rows = write_rows
'''


def test_a_worker_killed_mid_shard_leaves_no_partial_file_and_the_shard_is_redone(tmp_path, pool):
    reference = tmp_path / "ref"
    tiny_run(reference, pool, stages=["questions"])
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    out = tmp_path / "run"
    env = cli_env(SCALEQUEST_TEST_KILL_MARKER=str(tmp_path / "killed-once"))
    env["PYTHONPATH"] = f"{hooks}:{env['PYTHONPATH']}"
    res = subprocess.run([*CLI, "run", "--preset", "tiny", "--out", str(out), "--stage", "questions", "--workers", "2",
                          "--no-progress"], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "killed-once").exists(), "the worker should have been killed"
    assert data_files(out) == data_files(reference)
    assert not list(out.rglob("*.tmp"))
    record = rec.read(ShardRecord, RunLayout(out).record("questions", 2))
    assert record.execution.attempt == 2  # redone after its worker died
    assert {rec.read(ShardRecord, RunLayout(out).record("questions", i)).execution.attempt for i in (0, 1, 3, 4)} == {1}


# ---------------------------------------------------------------------------------------------- hashing at boundaries


def _simulated(root, pool):
    """The tiny preset under the simulate engine: every stage in a second, nothing built."""
    return tiny_run(root, pool, "engine.name=simulate", "rows_per_shard=5", "stages.questions.max_tokens=200",
                    "stages.solvability.max_tokens=200", "stages.difficulty.max_tokens=500",
                    "stages.responses.max_tokens=500")


def _count_data_hashes(monkeypatch) -> list[str]:
    import scalequest_dataset.run.files as files
    import scalequest_dataset.run.worker as worker

    seen: list[str] = []
    real = files.sha256_file

    def counting(path):
        if "/data/" in str(path):
            seen.append(str(path))
        return real(path)

    monkeypatch.setattr(files, "sha256_file", counting)
    monkeypatch.setattr(worker, "sha256_file", counting)
    return seen


def test_files_this_run_wrote_are_hashed_once_when_written(tmp_path, pool, monkeypatch):
    """Plan, shard reads, resume, finalize and status trust the sha256 computed as a file was written while it
    keeps its stamp on this host; another host, or a touched file, is hashed again."""
    import os

    from scalequest_dataset.run import status
    from scalequest_dataset.run.runner import finalize

    seen = _count_data_hashes(monkeypatch)
    layout = _simulated(tmp_path / "run", pool)
    _simulated(tmp_path / "run", pool)  # resume: every shard complete
    finalize(tmp_path / "run")
    status(layout)
    assert seen == []
    shard = sorted(layout.data_dir("language").glob("train-*.parquet"))[0]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns))  # same mtime, new ctime
    status(layout)
    assert seen == [str(shard)]
    monkeypatch.setattr("scalequest_dataset.run.worker.socket.gethostname", lambda: "another-node")
    seen.clear()
    status(layout)
    assert len(seen) == len(list(layout.root.glob("data/*/*.parquet")))  # every file, on another machine


def test_a_shard_reads_only_its_row_range_and_the_same_rows_either_way(tmp_path, pool, monkeypatch):
    import scalequest_dataset.run.worker as worker

    layout = _simulated(tmp_path / "run", pool)
    manifest = rec.read(Manifest, layout.manifest("responses"))
    total = manifest.rows("train")
    ranges = [(0, 3), (2, 17), (total - 4, total), (0, total)]
    fast = [worker._read_range(layout, manifest, a, b) for a, b in ranges]
    monkeypatch.setattr(worker, "written_here", lambda *args: False)  # as on another machine: whole files, hashed
    slow = [worker._read_range(layout, manifest, a, b) for a, b in ranges]
    assert fast == slow and [len(r) for r in fast] == [b - a for a, b in ranges]
    assert [r["id"] for r in fast[3]] == sorted(r["id"] for r in fast[3])
