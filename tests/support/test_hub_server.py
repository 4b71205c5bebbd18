"""The local Hub server, driven only by the real clients (huggingface_hub, datasets) in subprocesses.

The `_client_*` functions run in a subprocess started by the `run_client` fixture (see conftest.py), with
HF_ENDPOINT pointing at the server; they return what they observed as JSON and the tests check it here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from support.hub_server import HubServer

    ClientRunner = Callable[..., Any]  # the `run_client` fixture (conftest.py)

REPO = "scalequest/hub-server-test"
README = """---
license: apache-2.0
configs:
- config_name: alpha
  data_files:
  - split: train
    path: data/alpha/*.parquet
- config_name: beta
  data_files:
  - split: train
    path: data/beta/*.parquet
---
# Local Hub test dataset
"""
ALPHA_V1 = [{"id": 1, "text": "one"}, {"id": 2, "text": "two"}, {"id": 3, "text": "three"}]
ALPHA_V2 = [[{"id": 10, "text": "ten"}, {"id": 11, "text": "eleven"}], [{"id": 12, "text": "twelve"}]]
BETA = [{"id": 100, "text": "hundred"}, {"id": 200, "text": "two hundred"}]
NOTES = b"notes at v1: plain text goes to git, not LFS\n"


# ------------------------------------------------------------------------------------ client side (subprocess)


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def _error(call: Any) -> dict[str, Any]:
    """Call and report the client's exception (type, HTTP status), or None when it did not raise."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        call()
    except HfHubHTTPError as e:
        return {"type": type(e).__name__, "status": e.response.status_code, "message": str(e)}
    return {"type": None, "status": None, "message": ""}


def _client_publish(repo: str) -> dict[str, Any]:
    from huggingface_hub import CommitOperationAdd as Add
    from huggingface_hub import CommitOperationDelete as Delete
    from huggingface_hub import HfApi, HfFileSystem, hf_hub_download, snapshot_download

    api = HfApi()
    out: dict[str, Any] = {"repo_url": api.create_repo(repo, repo_type="dataset")}
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    out["create_again"] = _error(lambda: api.create_repo(repo, repo_type="dataset"))
    initial = api.dataset_info(repo).sha

    def commit(message: str, ops: list[Any], parent: str | None, revision: str | None = None) -> str:
        return api.create_commit(repo, ops, commit_message=message, repo_type="dataset", parent_commit=parent,
                                 revision=revision).oid

    c1 = commit("v1", [
        Add("README.md", README.encode()), Add("notes.txt", NOTES),
        Add("data/alpha/train-0.parquet", _parquet(ALPHA_V1)), Add("data/beta/train-0.parquet", _parquet(BETA)),
    ], parent=initial)
    api.create_tag(repo, tag="v1", tag_message="first release", repo_type="dataset")
    out["tag_again"] = _error(lambda: api.create_tag(repo, tag="v1", repo_type="dataset"))
    api.create_tag(repo, tag="v1", repo_type="dataset", exist_ok=True)
    api.create_tag(repo, tag="first", revision=c1[:7], repo_type="dataset")  # short commit id

    # v2: alpha rewritten and grown, beta re-sent unchanged (the client skips it), notes deleted.
    c2 = commit("v2", [
        Add("data/alpha/train-0.parquet", _parquet(ALPHA_V2[0])),
        Add("data/alpha/train-1.parquet", _parquet(ALPHA_V2[1])),
        Add("data/beta/train-0.parquet", _parquet(BETA)), Delete("notes.txt"),
    ], parent=c1)
    api.create_tag(repo, tag="v2", repo_type="dataset")
    out |= {"initial": initial, "c1": c1, "c2": c2}

    out["stale"] = _error(lambda: commit("stale", [Add("stale.txt", b"x")], parent=c1))
    out["failed"] = _error(lambda: commit("half", [Add("half.txt", b"x"), Delete("missing.txt")], parent=None))
    out["head_after_failures"] = api.dataset_info(repo).sha
    out["half_exists"] = api.file_exists(repo, "half.txt", repo_type="dataset")

    api.create_branch(repo, branch="dev", revision="v1", repo_type="dataset")
    out["branch_again"] = _error(lambda: api.create_branch(repo, branch="dev", repo_type="dataset"))
    out["c_dev"] = commit("dev work", [Add("dev.txt", b"dev only\n")], parent=c1, revision="dev")
    api.create_branch(repo, branch="feature/x", repo_type="dataset")  # a '/' in a ref name
    out["readme_feature"] = Path(hf_hub_download(repo, "README.md", repo_type="dataset", revision="feature/x")
                                 ).read_text()
    api.create_tag(repo, tag="tmp", repo_type="dataset")
    api.delete_tag(repo, tag="tmp", repo_type="dataset")
    out["delete_tag_again"] = _error(lambda: api.delete_tag(repo, tag="tmp", repo_type="dataset"))
    out["delete_main"] = _error(lambda: api.delete_branch(repo, branch="main", repo_type="dataset"))

    refs = api.list_repo_refs(repo, repo_type="dataset")
    out["branches"] = {r.name: r.target_commit for r in refs.branches}
    out["tags"] = {r.name: r.target_commit for r in refs.tags}
    out["commits"] = [(c.commit_id, c.title, c.authors) for c in api.list_repo_commits(repo, repo_type="dataset")]
    out["dev_commits"] = [c.title for c in api.list_repo_commits(repo, repo_type="dataset", revision="dev")]

    def tree(**kwargs: Any) -> list[dict[str, Any]]:
        return [{"path": e.path, "type": type(e).__name__, "size": getattr(e, "size", None),
                 "lfs": e.lfs.sha256 if getattr(e, "lfs", None) else None}
                for e in api.list_repo_tree(repo, repo_type="dataset", **kwargs)]

    out["tree_v1"] = tree(revision="v1", recursive=True)
    out["tree_main_root"] = tree()
    out["tree_main_alpha"] = tree(path_in_repo="data/alpha", expand=True)
    out["tree_dev"] = [e["path"] for e in tree(revision="dev", recursive=True)]
    out["tree_missing"] = _error(lambda: list(api.list_repo_tree(repo, "nope", repo_type="dataset")))
    out["paths_info"] = [
        {"path": e.path, "type": type(e).__name__, "last_commit": e.last_commit.oid if e.last_commit else None}
        for e in api.get_paths_info(repo, ["README.md", "data/beta", "missing.txt"], revision="v2",
                                    repo_type="dataset", expand=True)
    ]

    out["notes_v1"] = Path(hf_hub_download(repo, "notes.txt", repo_type="dataset", revision="v1")).read_text()
    out["notes_v2"] = _error(lambda: hf_hub_download(repo, "notes.txt", repo_type="dataset", revision="v2"))
    out["bad_revision"] = _error(lambda: api.dataset_info(repo, revision="no-such-ref"))
    out["bad_repo"] = _error(lambda: api.dataset_info("scalequest/no-such-repo"))
    out["card"] = api.dataset_info(repo, revision="v1").card_data.to_dict()

    fs = HfFileSystem()
    path = f"datasets/{repo}@v1/data/alpha/train-0.parquet"
    size = fs.info(path)["size"]
    with fs.open(path, "rb", block_size=16) as f:  # small blocks: every read below is a Range request
        f.seek(size - 8)
        tail = f.read(8)
        f.seek(0)
        head = f.read(4)
    out["fs_range"] = {"size": size, "head": head.decode(), "tail_magic": tail[-4:].decode()}
    out["fs_ls"] = sorted(fs.ls(f"datasets/{repo}@v2/data/alpha", detail=False))

    snapshot = Path(snapshot_download(repo, repo_type="dataset", revision="v1"))
    out["snapshot_v1"] = sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())
    return out


def _client_race(repo: str, n: int) -> dict[str, Any]:
    """`n` threads commit on the same parent at once: the server's lock must let exactly one through."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="dataset")
    parent = api.dataset_info(repo).sha

    def attempt(i: int) -> int | None:
        ops = [CommitOperationAdd(f"racer-{i}.txt", f"{i}\n".encode())]
        return _error(lambda: api.create_commit(repo, ops, commit_message=f"racer {i}", repo_type="dataset",
                                                parent_commit=parent))["status"]

    with ThreadPoolExecutor(n) as pool:
        statuses = list(pool.map(attempt, range(n)))
    files = api.list_repo_files(repo, repo_type="dataset")
    return {"statuses": statuses, "racers": sorted(f for f in files if f.startswith("racer-")),
            "commits": len(api.list_repo_commits(repo, repo_type="dataset"))}


def _client_load(repo: str, loads: list[tuple[str, str]]) -> dict[str, Any]:
    import datasets

    return {f"{config}@{revision}": datasets.load_dataset(repo, config, revision=revision, split="train").to_list()
            for config, revision in loads}


# ------------------------------------------------------------------------------------ tests


@pytest.fixture(scope="module")
def published(run_client: ClientRunner) -> dict[str, Any]:
    return run_client(__file__, "_client_publish", REPO)


def test_create_repo_and_commits(published: dict[str, Any]) -> None:
    assert published["repo_url"].endswith(f"/datasets/{REPO}")
    assert published["create_again"]["status"] == 409
    c1, c2 = published["c1"], published["c2"]
    assert len(c1) == len(c2) == 40 and c1 != c2
    assert [c[:2] for c in published["commits"]] == [[c2, "v2"], [c1, "v1"], [published["initial"], "initial commit"]]
    assert published["commits"][-1][2] == ["system"]


def test_stale_parent_is_412_and_failed_commits_change_nothing(published: dict[str, Any]) -> None:
    assert published["stale"]["type"] == "HfHubHTTPError" and published["stale"]["status"] == 412
    assert published["failed"]["type"] == "RemoteEntryNotFoundError" and published["failed"]["status"] == 404
    assert published["head_after_failures"] == published["c2"]
    assert published["half_exists"] is False


def test_branches_and_tags(published: dict[str, Any]) -> None:
    c1, c2 = published["c1"], published["c2"]
    assert published["tags"] == {"v1": c1, "first": c1, "v2": c2}
    assert published["branches"] == {"main": c2, "dev": published["c_dev"], "feature/x": c2}
    assert published["dev_commits"] == ["dev work", "v1", "initial commit"]
    assert published["readme_feature"] == README
    assert "dev.txt" in published["tree_dev"] and "dev.txt" not in [e["path"] for e in published["tree_v1"]]
    for key, status in [("tag_again", 409), ("branch_again", 409), ("delete_tag_again", 404), ("delete_main", 403)]:
        assert published[key]["status"] == status, key
    assert published["delete_tag_again"]["type"] == "RevisionNotFoundError"


def test_tree_and_paths_info(published: dict[str, Any]) -> None:
    v1 = {e["path"]: e for e in published["tree_v1"]}
    assert sorted(v1) == [".gitattributes", "README.md", "data", "data/alpha", "data/alpha/train-0.parquet",
                          "data/beta", "data/beta/train-0.parquet", "notes.txt"]
    assert v1["data"]["type"] == "RepoFolder"
    assert v1["data/alpha/train-0.parquet"]["lfs"] is not None  # parquet went through LFS
    assert v1["notes.txt"]["lfs"] is None and v1["notes.txt"]["size"] == len(NOTES)
    assert [e["path"] for e in published["tree_main_root"]] == ["data", ".gitattributes", "README.md"]
    assert [e["path"] for e in published["tree_main_alpha"]] == ["data/alpha/train-0.parquet",
                                                                  "data/alpha/train-1.parquet"]
    assert published["tree_missing"]["type"] == "RemoteEntryNotFoundError"
    info = {e["path"]: e for e in published["paths_info"]}
    assert set(info) == {"README.md", "data/beta"}
    assert info["data/beta"]["type"] == "RepoFolder"
    # beta was not changed by v2: its last commit is v1, README's too.
    assert info["data/beta"]["last_commit"] == info["README.md"]["last_commit"] == published["c1"]


def test_downloads(published: dict[str, Any], hub: HubServer) -> None:
    assert published["notes_v1"] == NOTES.decode()
    assert published["notes_v2"]["type"] == "RemoteEntryNotFoundError"
    assert published["bad_revision"]["type"] == "RevisionNotFoundError"
    assert published["bad_repo"]["type"] == "RepositoryNotFoundError"
    assert published["card"]["license"] == "apache-2.0"
    assert [c["config_name"] for c in published["card"]["configs"]] == ["alpha", "beta"]
    assert published["fs_range"]["head"] == "PAR1" and published["fs_range"]["tail_magic"] == "PAR1"
    assert published["fs_ls"] == [f"datasets/{REPO}@v2/data/alpha/train-{i}.parquet" for i in (0, 1)]
    assert published["snapshot_v1"] == [".gitattributes", "README.md", "data/alpha/train-0.parquet",
                                        "data/beta/train-0.parquet", "notes.txt"]
    statuses = {(method, status) for method, path, status in hub.requests if "/resolve/" in path}
    assert ("GET", 206) in statuses
    assert any(method == "PUT" and path.startswith("/lfs-upload/") for method, path, _ in hub.requests)


def test_load_dataset_at_tags(published: dict[str, Any], run_client: ClientRunner) -> None:
    loads = [("alpha", "v2"), ("beta", "v2"), ("alpha", "v1"), ("alpha", published["c1"])]
    rows = run_client(__file__, "_client_load", REPO, loads)
    assert rows["alpha@v2"] == ALPHA_V2[0] + ALPHA_V2[1]
    assert rows["beta@v2"] == BETA
    assert rows["alpha@v1"] == rows[f"alpha@{published['c1']}"] == ALPHA_V1


def test_concurrent_commits_on_one_parent(run_client: ClientRunner) -> None:
    result = run_client(__file__, "_client_race", "scalequest/race", 6)
    assert sorted(result["statuses"], key=str) == [412] * 5 + [None]
    assert len(result["racers"]) == 1 and result["commits"] == 2


def test_no_internal_errors(published: dict[str, Any], hub: HubServer) -> None:
    assert hub.errors == []


if __name__ == "__main__":  # client side: `run_client` starts this file with (function, JSON args, result path)
    result = globals()[sys.argv[1]](*json.loads(sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps(result))
