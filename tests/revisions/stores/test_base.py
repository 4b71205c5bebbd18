"""Shared store helpers: atomic file writes for fetches, and one cache folder per (store, commit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalequest_dataset.revisions.stores.base import writing_atomically
from scalequest_dataset.revisions.stores.git import LocalGitStore


def test_an_interrupted_write_leaves_neither_a_partial_file_nor_its_temporary(tmp_path):
    dest = tmp_path / "cache" / "train-00000-of-00001.parquet"
    with pytest.raises(RuntimeError), writing_atomically(dest) as fh:
        fh.write(b"half a shard")
        raise RuntimeError("connection dropped")
    assert list((tmp_path / "cache").iterdir()) == []
    with writing_atomically(dest) as fh:
        fh.write(b"a whole shard")
    assert dest.read_bytes() == b"a whole shard" and list(dest.parent.iterdir()) == [dest]


def test_cache_folder_is_per_store_and_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEQUEST_CACHE", str(tmp_path / "cache"))
    a, b = LocalGitStore(tmp_path / "a", create=True), LocalGitStore(tmp_path / "b", create=True)
    commit = "0" * 40
    assert a.cache_folder("shards", commit) == a.cache_folder("shards", commit)
    assert a.cache_folder("shards", commit) != b.cache_folder("shards", commit)
    assert a.cache_folder("shards", commit) != a.cache_folder("stores", commit)
    assert Path(tmp_path / "cache") in a.cache_folder("shards", commit).parents
    assert a.cache_folder("shards", commit).name == commit
