"""Publishing to the Hub and loading back with plain `datasets.load_dataset(repo, stage, revision=tag)`,
with the real huggingface_hub and datasets clients against the local Hub server (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = "scalequest/tiny"
STAGES = ["questions", "language", "dedup"]


def _client_publish(run_dir: str, target: str, prefix: str) -> dict[str, Any]:
    from scalequest_dataset.revisions.publish import publish
    from scalequest_dataset.revisions.stores import open_store

    results = publish(run_dir, target, None, prefix)
    store = open_store(target)
    return {"results": [{"stage": r.stage, "commit": r.commit, "created": r.created, "tags": r.tags}
                        for r in results],
            "tags": store.tags(), "commits": [c.title for c in store.commits()], "head": store.head(),
            "readme": store.read("README.md", "main").decode()}


def _client_load(repo: str, loads: list[list[str]]) -> dict[str, Any]:
    import datasets

    return {f"{stage}@{rev}": datasets.load_dataset(repo, stage, revision=rev, split=split).to_list()
            for stage, rev, split in loads}


def _client_stale(target: str) -> dict[str, Any]:
    from scalequest_dataset.revisions.stores import StaleParentError, open_store

    store = open_store(target)
    head = store.head()
    parent = store.commits()[1].id  # an older commit: stale
    try:
        store.commit({"stale.txt": b"x"}, [], "stale", parent=parent)
    except StaleParentError as exc:
        return {"error": str(exc), "head_unchanged": store.head() == head}
    return {"error": None}


def _client_diff_and_regenerate(repo: str, run_dir: str, scratch: str) -> dict[str, Any]:
    """`diff` of a Hub revision (ORG/NAME@REV) against the run that made it, and `regenerate` of it."""
    import scalequest_dataset

    report = scalequest_dataset.diff(f"{repo}@v1-language", run_dir, stage="language")
    other = scalequest_dataset.diff(f"{repo}@v1-questions", f"hf://datasets/{repo}@v1-language", stage="language")
    regen = scalequest_dataset.regenerate(f"{repo}@v1-language", "language", scratch=scratch)
    return {"identical": report.identical, "status": report.stages[0].status, "added": other.stages[0].status,
            "regenerated": regen.all_match, "byte_identical": all(s.byte_identical for s in regen.shards),
            "splits": sorted({f.split for s in regen.shards for f in s.files})}


def run_dir_rows(run_dir: Path, stage: str, split: str = "train") -> list[dict]:
    rows = []
    for f in sorted((run_dir / "data" / stage).glob(f"{split}-*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from support.runs import tiny_run

    from scalequest_dataset.engines import EnginePool

    root = tmp_path_factory.mktemp("run")
    pool = EnginePool()
    try:
        tiny_run(root, pool, stages=STAGES)
    finally:
        pool.close()
    return root


@pytest.fixture(scope="module")
def published(run_client, tiny_run) -> dict[str, Any]:
    return run_client(__file__, "_client_publish", str(tiny_run), f"hf://datasets/{REPO}", "v1")


def test_one_commit_and_tag_per_stage(published):
    assert [r["stage"] for r in published["results"]] == STAGES
    assert all(r["created"] for r in published["results"])
    assert published["tags"] == {f"v1-{r['stage']}": r["commit"] for r in published["results"]}
    assert published["commits"][: len(STAGES)] == [
        t for t in published["commits"] if t.startswith("Publish stage")][::1]
    assert len([t for t in published["commits"] if t.startswith("Publish stage")]) == len(STAGES)
    assert "config_name: dedup" in published["readme"]
    assert 'load_dataset("scalequest/tiny", "language", revision="v1-language"' in published["readme"]


def test_plain_datasets_loads_every_stage_at_its_tag(published, run_client, tiny_run):
    loads = [[s, f"v1-{s}", "train"] for s in STAGES]
    dropped = [s for s in STAGES if run_dir_rows(tiny_run, s, "dropped")]
    loads += [[s, f"v1-{s}", "dropped"] for s in dropped]
    rows = run_client(__file__, "_client_load", REPO, loads)
    for stage, rev, split in loads:
        assert rows[f"{stage}@{rev}"] == run_dir_rows(tiny_run, stage, split), (stage, split)


def test_republish_makes_no_commit(published, run_client, tiny_run):
    again = run_client(__file__, "_client_publish", str(tiny_run), f"hf://datasets/{REPO}", "v1")
    assert not any(r["created"] for r in again["results"])
    assert again["head"] == published["head"] and again["commits"] == published["commits"]


def test_stale_parent_is_refused_cleanly(published, run_client):
    result = run_client(__file__, "_client_stale", f"hf://datasets/{REPO}")
    assert result["error"] and "moved" in result["error"] and result["head_unchanged"]


def test_no_token_is_a_clear_error_and_writes_nothing(hub, tiny_run, tmp_path):
    env = hub.client_env(tmp_path / "hf_home")
    env.pop("HF_TOKEN", None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[3])
    res = subprocess.run([sys.executable, "-m", "scalequest_dataset.cli", "publish", str(tiny_run), "--to",
                          "hf://datasets/scalequest/no-token"], env=env, capture_output=True, text=True)
    assert res.returncode == 2
    assert "HF_TOKEN" in res.stderr
    assert not any(path.startswith("/api/datasets/scalequest/no-token/commit") for _, path, _ in hub.requests)


def test_bad_hub_target(hub, tiny_run, tmp_path):
    env = {**hub.client_env(tmp_path / "hf_home"), "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    res = subprocess.run([sys.executable, "-m", "scalequest_dataset.cli", "publish", str(tiny_run), "--to",
                          "hf://models/x/y"], env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "hf://datasets/ORG/NAME" in res.stderr


def test_diff_and_regenerate_read_a_hub_revision(published, run_client, tiny_run, tmp_path):
    result = run_client(__file__, "_client_diff_and_regenerate", REPO, str(tiny_run), str(tmp_path / "scratch"),
                        timeout=600)
    assert result["identical"] and result["status"] == "identical"
    assert result["added"] == "added"  # language is not at the questions revision
    assert result["regenerated"] and result["byte_identical"]
    # every split the stage wrote is compared (a split with no rows writes no file: then there is none to compare)
    assert result["splits"] == sorted({f.name.split("-")[0] for f in (tiny_run / "data" / "language").glob("*.parquet")})


def test_no_server_errors(published, hub):
    assert hub.errors == []


def _client_info(repo: str, loads: list[list[str]]) -> dict[str, Any]:
    """What `datasets` itself counts on loading each stage's split: rows, Arrow bytes, features."""
    import datasets

    out = {}
    for stage, rev, split in loads:
        ds = datasets.load_dataset(repo, stage, revision=rev, split=split)
        out[f"{stage}/{split}"] = {"rows": ds.num_rows, "num_bytes": ds.info.splits[split].num_bytes,
                                   "arrow_bytes": ds.data.nbytes, "features": ds.features.to_dict()}
    return out


def test_the_card_carries_dataset_info_as_push_to_hub_writes_it(published, run_client, tiny_run):
    from datasets import Features
    from huggingface_hub import DatasetCard

    from scalequest_dataset.run.files import arrow_schema
    from scalequest_dataset.stages import STAGES as REGISTRY

    card = DatasetCard(published["readme"])  # huggingface_hub's own parser
    infos = {i["config_name"]: i for i in card.data.dataset_info}
    assert list(infos) == sorted(STAGES)  # a list by config name, as push_to_hub writes several configs
    loads = [[s, f"v1-{s}", split["name"]] for s in STAGES for split in infos[s]["splits"]]
    loaded = run_client(__file__, "_client_info", REPO, loads)
    for stage, _, split in loads:
        (entry,) = [x for x in infos[stage]["splits"] if x["name"] == split]
        got = loaded[f"{stage}/{split}"]
        rows = run_dir_rows(tiny_run, stage, split)
        assert entry["num_examples"] == got["rows"] == len(rows) > 0, (stage, split)
        # num_bytes is the rows' Arrow size as written (push_to_hub: the Arrow size of the dataset it pushes);
        # `datasets`' own count on loading differs only by the validity bitmaps its Parquet reader adds
        written = sum(pa.Table.from_pylist(pq.read_table(f).to_pylist(), schema=arrow_schema(REGISTRY[stage].features))
                      .nbytes for f in sorted((tiny_run / "data" / stage).glob(f"{split}-*.parquet")))
        assert entry["num_bytes"] == written > 0, (stage, split)
        assert abs(got["num_bytes"] - written) <= 0.01 * written, (stage, split, got["num_bytes"], written)
        assert Features._from_yaml_list(infos[stage]["features"]) == REGISTRY[stage].features
        assert got["features"] == REGISTRY[stage].features.to_dict()
    for stage in STAGES:
        info = infos[stage]
        files = [f for split in info["splits"] for f in (tiny_run / "data" / stage).glob(f"{split['name']}-*.parquet")]
        assert info["download_size"] == sum(f.stat().st_size for f in files)
        assert info["dataset_size"] == sum(s["num_bytes"] for s in info["splits"])


if __name__ == "__main__":  # client side: `run_client` starts this file with (function, JSON args, result path)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    result = globals()[sys.argv[1]](*json.loads(sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps(result))

