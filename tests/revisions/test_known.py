"""The machine's memory of files it verified (`revisions/known.py`): a second check of the same bytes reads
nothing, and any change to the file, or a file too young to trust its timestamps, means reading it again."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pytest

from scalequest_dataset.revisions import known, verify
from scalequest_dataset.run.files import write_table
from scalequest_dataset.run.records import FileRecord


@pytest.fixture()
def shard(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEQUEST_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "train-00000-of-00001.parquet"
    record = FileRecord(**write_table(path, pa.table({"id": [f"q-{i}" for i in range(50)], "x": list(range(50))})))
    old = time.time() - 60  # settled: written a minute ago
    os.utime(path, (old, old))
    monkeypatch.setattr(known, "SETTLE", 0.0)  # ctime cannot be set back: let the test's file count as settled
    return path, record


def _reads(monkeypatch) -> list[str]:
    calls: list[str] = []
    real_sha, real_content = verify.sha256_of, verify._content
    monkeypatch.setattr(verify, "sha256_of", lambda p: calls.append("sha256") or real_sha(p))
    monkeypatch.setattr(verify, "_content", lambda p: calls.append("content") or real_content(p))
    return calls


def test_a_second_check_of_the_same_bytes_reads_nothing(shard, monkeypatch):
    path, record = shard
    calls = _reads(monkeypatch)
    assert verify.file_problem(path, record, content=False)[0] is None
    assert calls == ["sha256"]
    assert verify.file_problem(path, record)[0] is None  # the rows were never digested: read now
    assert calls == ["sha256", "sha256", "content"]
    calls.clear()
    problem, checked = verify.file_problem(path, record)
    assert problem is None and calls == [] and checked.content == record.content and checked.sha256 == record.sha256


def test_a_rewritten_file_is_read_again_and_its_damage_found(shard, monkeypatch):
    path, record = shard
    assert verify.file_problem(path, record)[0] is None
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, same mtime: only the ctime moves
    stat = os.stat(path)
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    calls = _reads(monkeypatch)
    problem, _ = verify.file_problem(path, record)
    assert calls[:1] == ["sha256"] and "does not match its manifest" in problem


def test_a_young_file_is_not_remembered(shard, monkeypatch):
    path, record = shard
    monkeypatch.setattr(known, "SETTLE", 3600.0)
    assert verify.file_problem(path, record)[0] is None
    calls = _reads(monkeypatch)
    assert verify.file_problem(path, record)[0] is None and calls == ["sha256", "content"]
