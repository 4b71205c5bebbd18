"""A hostile revision on the Hub (issue 19's tests, the Hub store): the attacks of test_hostile_store.py that the Hub
API can carry, committed with huggingface_hub's own client against the local Hub server, the stage's tag moved onto it. Each
goes through load, diff, regenerate, log and publish --to (the CLI, in one client process); for each: nothing is
written outside the cache and scratch folders (the sentinel folder the attacks aim at stays empty, no `.pth` appears
in site-packages, the run directory keeps its bytes), the verdict is never "same" or "reproduces", and the exit code
is never 0 where the attack touches what the command reads.

Not carried here: `..` tree entries and symlinks (the Hub's tree has neither: huggingface_hub refuses such a
path before sending it, and HubStore's listing refuses them too, tested in test_locator) and corrupt objects (a
Hub file is checked like any fetched file: the altered-rows case)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import site
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

STAGE = "questions"
TAG = f"v1-{STAGE}"
DATA = f"data/{STAGE}"
ATTACKS = ["altered_rows", "traversing_manifest_name", "absolute_manifest_name", "card_outside", "absurd_numbers"]
NAMES = {"altered_rows": "train-00000-of-00005.parquet", "traversing_manifest_name": "evil.pth",
         "absolute_manifest_name": "home/read", "card_outside": "README.md", "absurd_numbers": "shards.0.rows_in"}
DATA_ONLY = {"altered_rows"}  # `log` reads no data file: nothing to refuse there


@pytest.fixture(scope="module")
def run(tmp_path_factory, pool) -> Path:
    from support.runs import tiny_run

    return tiny_run(tmp_path_factory.mktemp("run") / "run", pool, stages=[STAGE]).root


def _capture(argv: list[str]) -> tuple[int, str]:
    """`scalequest ARGV` in this process, its stdout and stderr captured at the file descriptors."""
    from scalequest_dataset import cli

    with tempfile.TemporaryFile() as out:
        sys.stdout.flush(), sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1), os.dup2(out.fileno(), 2)
        try:
            code = cli.main(argv)
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])
        out.seek(0)
        return code, out.read().decode(errors="replace")


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if not any(p.is_relative_to(s) for s in skip)}


def _attack(name: str, api: Any, repo: str, run: Path, home: Path, build: Path) -> None:
    """Commit the attack on the repo's main and move the stage's tag onto it (`good` keeps the published one)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from huggingface_hub import CommitOperationAdd

    from scalequest_dataset.run.files import sha256_file

    manifest = json.loads(Path(api.hf_hub_download(repo, f"manifests/{STAGE}.json", repo_type="dataset")).read_text())
    first = manifest["shards"][0]["files"]["train"]
    adds: dict[str, bytes] = {}
    if name == "altered_rows":  # rows altered, sha256 and size updated, the content digest kept
        table = pq.read_table(run / DATA / first["file"])
        queries = table.column("query").to_pylist()
        queries[0] = "altered"
        path = build / first["file"]
        pq.write_table(table.set_column(table.schema.get_field_index("query"), "query", pa.array(queries)), path)
        first.update(sha256=sha256_file(path), bytes=path.stat().st_size)
        adds[f"{DATA}/{first['file']}"] = path.read_bytes()
    elif name == "traversing_manifest_name":  # joined onto a cache folder, it would land in the sentinel folder
        data = b"import os\n"
        first.update(file="../../../../../../home/sentinel/evil.pth", sha256=hashlib.sha256(data).hexdigest(),
                     bytes=len(data))
        adds[f"{DATA}/x"] = data
    elif name == "absolute_manifest_name":  # the user's own faithful copy of the shard, read as the store's
        local = home / "read" / first["file"]
        local.write_bytes((run / DATA / first["file"]).read_bytes())
        first.update(file=str(local))
    elif name == "card_outside":
        card = Path(api.hf_hub_download(repo, "README.md", repo_type="dataset")).read_text()
        hostile = card.replace(f"path: {DATA}/train-*.parquet", f"path: {DATA}/../../../../home/read/*.parquet", 1)
        assert hostile != card
        adds["README.md"] = hostile.encode()
    elif name == "absurd_numbers":  # negative counts that add up (a consistent lie)
        manifest["shards"][0]["rows_in"] = -1_000_000
        manifest["counts"]["rows_in"] = sum(s["rows_in"] for s in manifest["shards"])
    if name != "card_outside":
        adds[f"manifests/{STAGE}.json"] = json.dumps(manifest).encode()
    api.create_tag(repo, tag="good", revision=TAG, repo_type="dataset")
    info = api.create_commit(repo, [CommitOperationAdd(p, b) for p, b in adds.items()], commit_message=name,
                             repo_type="dataset")
    api.delete_tag(repo, tag=TAG, repo_type="dataset")  # the stage's own tag moved onto the attack, as a store's owner can
    api.create_tag(repo, tag=TAG, revision=info.oid, repo_type="dataset")


def _client_hostile(run_dir: str, models: str) -> dict[str, Any]:
    """For each attack, a fresh repo: publish the run, commit the attack, then every reader through the CLI."""
    from huggingface_hub import HfApi

    from scalequest_dataset.revisions.publish import publish

    run, work = Path(run_dir), Path.cwd()
    api, results = HfApi(), {}
    pth = {str(p) for d in [*site.getsitepackages(), site.getusersitepackages()] if Path(d).is_dir()
           for p in Path(d).glob("*.pth")}
    for name in ATTACKS:
        root = work / name
        home, cache, scratch, build = root / "home", root / "cache", root / "scratch", root / "build"
        for d in (home / "sentinel", home / "read", root / "cwd", build, cache):
            d.mkdir(parents=True)
        (cache / "models").symlink_to(models)  # the tiny model, built once for the session
        os.environ.update(SCALEQUEST_CACHE=str(cache), HOME=str(home))
        repo = f"scalequest/hostile-{name.replace('_', '-')}"
        publish(run, f"hf://datasets/{repo}", [STAGE])
        _attack(name, api, repo, run, home, build)
        os.chdir(root / "cwd")
        skip = (cache, scratch, build)
        before = _snapshot(root, skip), _snapshot(run, ())
        results[name] = {
            "load": _capture(["load", repo, STAGE, "--revision", TAG]),
            "diff": _capture(["diff", f"{repo}@{TAG}", f"{repo}@good"]),
            "regenerate": _capture(["regenerate", f"{repo}@{TAG}", "--stage", STAGE, "--scratch", str(scratch)]),
            "log": _capture(["log", repo]),
            "publish": _capture(["publish", str(run), "--to", f"hf://datasets/{repo}"]),
            "unchanged": (_snapshot(root, skip), _snapshot(run, ())) == before,
            "sentinel": sorted(os.listdir(home / "sentinel")),
        }
        os.chdir(work)
    new_pth = {str(p) for d in [*site.getsitepackages(), site.getusersitepackages()] if Path(d).is_dir()
               for p in Path(d).glob("*.pth")}
    return {"attacks": results, "pth": sorted(new_pth - pth)}


# Broken on purpose, each seen to fail here: verify.file_problem without its content-digest comparison (load exits 0
# on altered_rows); `log` opening its target as a local path instead of through the locator (log ORG/NAME exits 2).
def test_a_hostile_hub_revision_is_refused_by_every_reader(run, run_client, tmp_path):
    from scalequest_dataset.recipe.models import cache_dir

    got = run_client(__file__, "_client_hostile", str(run), str(cache_dir() / "models"),
                     hf_home=tmp_path / "hf_home", timeout=900)
    assert got["pth"] == []
    for name, res in got["attacks"].items():
        assert res["unchanged"] and res["sentinel"] == [], (name, res)
        for command in ("load", "diff", "regenerate", "log", "publish"):
            code, text = res[command]
            if command == "log" and name in DATA_ONLY:
                assert code == 0 and "same" not in text, text
                continue
            assert code not in (0, 3), f"{command} exited {code} on {name}:\n{text}"
            assert "Traceback" not in text, f"{command} on {name}: {text}"
            lowered = text.lower()
            assert "same data" not in lowered and "identical" not in lowered and "reproduce:" not in lowered, text
            if code == 2 and not (command == "publish" and name in DATA_ONLY):
                errors = [line for line in text.splitlines() if line.startswith("error:")]
                assert len(errors) == 1 and NAMES[name] in errors[0], f"{command} on {name}: {text}"
            elif code == 1:
                assert "corrupt" in lowered and NAMES[name] in text, f"{command} on {name}: {text}"
    assert not Path("/tmp/pwned").exists()


if __name__ == "__main__":  # client side: `run_client` starts this file with (function, JSON args, result path)
    with contextlib.suppress(FileExistsError):
        Path(sys.argv[3]).parent.mkdir(parents=True)
    os.environ["SCALEQUEST_CACHE"] = str(Path(sys.argv[3]).parent / "cache")
    os.chdir(Path(sys.argv[3]).parent)
    result = globals()[sys.argv[1]](*json.loads(sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps(result))
