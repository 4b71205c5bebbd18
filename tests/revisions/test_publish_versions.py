"""Publishing a version after another into the same store, whatever files a stage adds, removes or renames: a v2
with fewer shards (other names), an empty `dropped` where v1 dropped rows, and a figure gone (no drops, no
drop-reasons chart); into a local git store and into the local Hub server. A version is checked committable before
the first commit, and one that fails half way says so and is completed by running the same command again."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

STAGES = ["questions", "language", "dedup"]
V1 = ("stages.questions.max_tokens=2",)  # 2-token questions: dedup drops 10 of 40, so there is a drop chart
V2 = ("rows_per_shard=64",)  # 2 or 1 shards instead of 5; nothing duplicated: every `dropped` empty
DROPS = "images/drop-reasons.png"


def run_rows(run: Path, stage: str, split: str = "train") -> list[dict]:
    return [r for f in sorted((run / "data" / stage).glob(f"{split}-*.parquet")) for r in pq.read_table(f).to_pylist()]


def run_files(run: Path, stage: str) -> set[str]:
    return {f"data/{stage}/{p.name}" for p in (run / "data" / stage).glob("*.parquet")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    from support.runs import tiny_run

    from scalequest_dataset.engines import EnginePool

    pool = EnginePool()
    try:
        out = {}
        for name, overrides in (("v1", V1), ("v2", V2)):
            out[name] = tmp_path_factory.mktemp(name)
            tiny_run(out[name], pool, *overrides, stages=STAGES)
    finally:
        pool.close()
    assert run_rows(out["v1"], "dedup", "dropped") and not run_rows(out["v2"], "dedup", "dropped")
    assert len(run_files(out["v2"], "dedup")) < len(run_files(out["v1"], "dedup"))
    return out


def _versions(target: str, v1: str, v2: str) -> dict[str, Any]:
    """v1, then v2, then v1 again under v3 (more files after fewer): what each tag holds, and what loads there."""
    import scalequest_dataset
    from scalequest_dataset.revisions.publish import publish
    from scalequest_dataset.revisions.stores import open_store

    created = {}
    for prefix, run in (("v1", v1), ("v2", v2), ("v3", v1)):
        created[prefix] = [r.created for r in publish(run, target, None, prefix)]
    store = open_store(target)
    files = {tag: sorted(store.files(commit)) for tag, commit in store.tags().items()}
    rows = {f"{stage}@{prefix}/{split}": scalequest_dataset.load_dataset(target, stage, revision=f"{prefix}-{stage}",
                                                                         split=split).to_list()
            for prefix in ("v1", "v2", "v3") for stage in STAGES for split in ("train", "dropped")}
    return {"created": created, "files": files, "rows": rows}


def check_versions(result: dict[str, Any], runs: dict[str, Path]) -> None:
    assert result["created"] == {"v1": [True] * 3, "v2": [True] * 3, "v3": [True] * 3}
    for prefix, run in (("v1", runs["v1"]), ("v2", runs["v2"]), ("v3", runs["v1"])):
        for stage in STAGES:
            files = set(result["files"][f"{prefix}-{stage}"])
            assert {f for f in files if f.startswith(f"data/{stage}/")} == run_files(run, stage)  # no stale shard
            for split in ("train", "dropped"):
                assert result["rows"][f"{stage}@{prefix}/{split}"] == run_rows(run, stage, split), (prefix, stage)
    assert DROPS in result["files"]["v1-dedup"] and DROPS not in result["files"]["v2-dedup"]
    assert DROPS in result["files"]["v3-dedup"]
    assert result["rows"]["dedup@v2/dropped"] == [] != result["rows"]["dedup@v1/dropped"]


def test_any_version_after_any_other_into_a_local_store(runs, tmp_path):
    check_versions(_versions(str(tmp_path / "store"), str(runs["v1"]), str(runs["v2"])), runs)


def test_any_version_after_any_other_into_the_hub(runs, run_client, hub):
    check_versions(run_client(__file__, "_versions", "hf://datasets/scalequest/versions", str(runs["v1"]),
                              str(runs["v2"]), timeout=300), runs)
    assert hub.errors == []


def tree(store, revision: str) -> dict[str, str]:
    """The data and figures at a revision (manifests and card name commits, whose dates differ)."""
    return {p: d.value for p, d in store.files(revision).items() if p.startswith(("data/", "images/"))}


@pytest.mark.parametrize("fail", ["commit", "create_tag"])
def test_a_version_failing_half_way_says_so_and_the_same_command_completes_it(runs, tmp_path, monkeypatch, fail):
    from scalequest_dataset.cli import explain
    from scalequest_dataset.revisions.publish import publish
    from scalequest_dataset.revisions.stores import StoreError, open_store
    from scalequest_dataset.revisions.stores.base import PartialPublish
    from scalequest_dataset.revisions.stores.git import LocalGitStore

    clean = tmp_path / "clean"
    publish(runs["v1"], clean)
    store_path = tmp_path / "store"
    real = getattr(LocalGitStore, fail)
    calls = []

    def dies_second_time(self, *args, **kwargs):  # the first stage goes through, the second fails
        calls.append(args)
        if len(calls) == {"commit": 2, "create_tag": 1}[fail]:
            raise OSError("connection reset (injected)")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LocalGitStore, fail, dies_second_time)
    with pytest.raises(PartialPublish) as caught:
        publish(runs["v1"], store_path)
    message = str(caught.value)
    assert "half published" in message and "Re-run the same command" in message and "injected" in message
    if fail == "commit":
        assert "published questions (v1-questions)" in message and "not published: language, dedup" in message
    else:  # the commit of questions landed, its tag did not
        assert "published none" in message and "stage 'questions' failed" in message
    assert explain(caught.value)[0] == explain(OSError("x"))[0]  # the cause's exit code, the whole story
    monkeypatch.setattr(LocalGitStore, fail, real)

    store = open_store(store_path)
    commits = len(store.commits())
    again = publish(runs["v1"], store_path)
    assert again[0].created is False  # the first stage was there: no new commit
    assert len(store.commits()) == commits + 2
    reference = open_store(clean)
    assert set(store.tags()) == set(reference.tags())
    for tag in store.tags():
        assert tree(store, tag) == tree(reference, tag)

    with pytest.raises(StoreError):  # not a PartialPublish: nothing to complete
        publish(runs["v2"], store_path)


def test_every_stage_is_checked_before_the_first_commit(runs, tmp_path):
    from scalequest_dataset.revisions.publish import publish
    from scalequest_dataset.revisions.stores import StoreError, open_store
    from scalequest_dataset.revisions.stores.base import PartialPublish

    store_path = tmp_path / "store"
    publish(runs["v2"], store_path, ["dedup"])  # v1-dedup holds other data than v1's dedup
    store = open_store(store_path)
    head, tags = store.head(), store.tags()
    with pytest.raises(StoreError, match=r"v1-dedup.*already exists") as caught:
        publish(runs["v1"], store_path)
    assert not isinstance(caught.value, PartialPublish)
    assert (store.head(), store.tags()) == (head, tags)  # questions and language were not committed either


if __name__ == "__main__":  # client side: `run_client` starts this file with (function, JSON args, result path)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = globals()[sys.argv[1]](*json.loads(sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps(result))
