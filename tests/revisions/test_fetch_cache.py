"""A damaged copy in a fetch cache is not a corrupt store (issue 19, item 4): it is fetched again once, and when
the fresh copy checks out, a warning names the cache as the culprit (and its path); only a fresh copy that fails
too blames the store. For a local store and a Hub repo (through the local Hub server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest
from support.runs import tiny_run

import scalequest_dataset
from scalequest_dataset.revisions.publish import publish
from scalequest_dataset.revisions.stores import VerificationError

STAGE = "questions"


def flip(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(blob))


@pytest.fixture(scope="module")
def run(tmp_path_factory, pool) -> Path:
    return tiny_run(tmp_path_factory.mktemp("run") / "run", pool, stages=[STAGE]).root


# Broken on purpose: `StoreSource._fetch` raising at once on a damaged cached copy -> fails.
def test_a_damaged_cached_copy_is_fetched_again_and_the_cache_named(run, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("SCALEQUEST_CACHE", str(tmp_path / "cache"))
    publish(run, tmp_path / "store", [STAGE])
    rows = scalequest_dataset.load_dataset(tmp_path / "store", STAGE, revision=f"v1-{STAGE}").to_list()
    cached = sorted((tmp_path / "cache" / "verified").rglob("train-00001-*.parquet"))
    assert len(cached) == 1
    flip(cached[0])
    capfd.readouterr()
    again = scalequest_dataset.load_dataset(tmp_path / "store", STAGE, revision=f"v1-{STAGE}").to_list()
    assert again == rows
    err = capfd.readouterr().err
    assert f"the cached copy {cached[0]}" in err and "the cache was at fault" in err, err
    flip(cached[0])  # the repaired copy, damaged again: fine again, the store was never at fault
    assert scalequest_dataset.load_dataset(tmp_path / "store", STAGE, revision=f"v1-{STAGE}").num_rows == len(rows)


def test_a_store_whose_own_bytes_are_wrong_is_blamed_after_one_fresh_fetch(run, tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEQUEST_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "store"
    publish(run, store, [STAGE])
    scalequest_dataset.load_dataset(store, STAGE, revision=f"v1-{STAGE}")
    (cached,) = sorted((tmp_path / "cache" / "verified").rglob("train-00001-*.parquet"))
    flip(cached)
    sha = subprocess.run(["git", "--git-dir", str(store), "rev-parse", f"main:data/{STAGE}/{cached.name}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    obj = store / "objects" / sha[:2] / sha[2:]  # the store's own bytes too (a readable object, other content)
    raw = bytearray(zlib.decompress(obj.read_bytes()))
    raw[len(raw) // 2] ^= 0x01
    os.chmod(obj, 0o644)
    obj.write_bytes(zlib.compress(bytes(raw)))
    with pytest.raises(VerificationError, match=f"the cached copy {cached}.*a fresh copy fails too"):
        scalequest_dataset.load_dataset(store, STAGE, revision=f"v1-{STAGE}")


def _client_damaged_hub_cache(run_dir: str, repo: str) -> dict[str, Any]:
    """Publish, load (filling our verified cache), damage the cached copy of one shard, load again: the warning
    and the rows."""
    import contextlib
    import io

    from scalequest_dataset.recipe.models import cache_dir
    from scalequest_dataset.revisions.publish import publish

    publish(run_dir, f"hf://datasets/{repo}", [STAGE])
    first = scalequest_dataset.load_dataset(repo, STAGE, revision=f"v1-{STAGE}").to_list()
    (cached,) = (cache_dir() / "verified").rglob("train-00001-*.parquet")
    flip(cached)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        again = scalequest_dataset.load_dataset(repo, STAGE, revision=f"v1-{STAGE}").to_list()
    return {"same": again == first, "err": err.getvalue(), "cached": str(cached)}


def test_a_damaged_cache_of_a_hub_revision_is_fetched_again(run, run_client, tmp_path):
    got = run_client(__file__, "_client_damaged_hub_cache", str(run), "scalequest/cache",
                     hf_home=tmp_path / "hf_home")
    assert got["same"], got
    assert f"the cached copy {got['cached']}" in got["err"] and "the cache was at fault" in got["err"], got["err"]


if __name__ == "__main__":  # client side: `run_client` starts this file with (function, JSON args, result path)
    os.environ["SCALEQUEST_CACHE"] = str(Path(sys.argv[3]).parent / "cache")
    result = globals()[sys.argv[1]](*json.loads(sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps(result))
