"""A hostile store (issue 19): revisions built with git plumbing that try to make a reader write outside its
cache, read the user's own files, or call altered rows "the same data". Every one goes through load, diff,
regenerate, log and publish --to (the CLI, in this process), and for each: nothing was written outside the cache
and scratch folders (a sentinel folder the attacks aim at stays empty, no `.pth` appears in site-packages), the
verdict is never "same" or "reproduces", and the exit code is never 0.

One tiny store is built once per module; each case mutates a copy."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.runs import tiny_run

from scalequest_dataset import cli
from scalequest_dataset.recipe.models import cache_dir
from scalequest_dataset.revisions.publish import publish
from scalequest_dataset.run.files import sha256_file

STAGE = "questions"
TAG = "v1-questions"
DATA = f"data/{STAGE}"


# ---------------------------------------------------------------------------------------------- git plumbing


def git(store: Path, *args: str, input: bytes | None = None) -> str:
    res = subprocess.run(["git", "--git-dir", str(store), *args], input=input, capture_output=True, check=True)
    return res.stdout.decode()


def blob(store: Path, data: bytes) -> str:
    return git(store, "hash-object", "-w", "--stdin", input=data).strip()


def entries(store: Path, tree: str) -> dict[str, tuple[str, str, str]]:
    out = {}
    for item in filter(None, git(store, "ls-tree", "-z", tree).split("\0")):
        meta, name = item.split("\t", 1)
        mode, kind, sha = meta.split()
        out[name] = (mode, kind, sha)
    return out


def mktree(store: Path, items: dict[str, tuple[str, str, str]]) -> str:
    text = "".join(f"{mode} {kind} {sha}\t{name}\0" for name, (mode, kind, sha) in sorted(items.items()))
    return git(store, "mktree", "-z", "--missing", input=text.encode()).strip()


def put(store: Path, tree: str | None, parts: list[str], entry: tuple[str, str, str] | None) -> str:
    """`tree` with the entry at `parts` replaced (None: removed); names are taken as they are, `..` included."""
    items = entries(store, tree) if tree else {}
    if len(parts) == 1:
        if entry is None:
            items.pop(parts[0], None)
        else:
            items[parts[0]] = entry
    else:
        sub = items.get(parts[0])
        items[parts[0]] = ("040000", "tree", put(store, sub[2] if sub else None, parts[1:], entry))
    return mktree(store, items)


def recommit(store: Path, changes: dict[str, tuple[str, str, str] | None]) -> str:
    """A commit on main with `changes` (path -> (mode, kind, sha) or None), and the stage's tag moved to it."""
    head = git(store, "rev-parse", "main").strip()
    tree = git(store, "rev-parse", f"{head}^{{tree}}").strip()
    for path, entry in changes.items():
        tree = put(store, tree, path.split("/"), entry)
    commit = git(store, "commit-tree", tree, "-p", head, "-m", "hostile").strip()
    git(store, "update-ref", "refs/heads/main", commit)
    git(store, "update-ref", f"refs/tags/{TAG}", commit)
    return commit


def file_entry(store: Path, data: bytes) -> tuple[str, str, str]:
    return ("100644", "blob", blob(store, data))


def manifest(store: Path) -> dict:
    return json.loads(git(store, "cat-file", "blob", f"main:manifests/{STAGE}.json"))


def with_manifest(store: Path, edit: Callable[[dict], None], **more: tuple[str, str, str] | None) -> None:
    m = manifest(store)
    edit(m)
    recommit(store, {f"manifests/{STAGE}.json": file_entry(store, json.dumps(m).encode()),
                     **{k.replace("__", "/"): v for k, v in more.items()}})


def first(m: dict) -> dict:
    return m["shards"][0]["files"]["train"]


# ---------------------------------------------------------------------------------------------- the attacks


def traversing_tree_entries(store: Path, env: dict[str, Path]) -> None:
    """`..` tree entries under the stage's folder, leading to a `.pth` file."""
    pth = file_entry(store, b"import os; os.system('touch /tmp/pwned')\n")
    recommit(store, {f"{DATA}/../../../../../../home/sentinel/evil.pth": pth})


def traversing_manifest_name(store: Path, env: dict[str, Path]) -> None:
    """A manifest file name with `..` that, joined onto the cache folder, lands in the sentinel folder."""
    name = "../../../../../../home/sentinel/evil.pth"
    data = b"import os\n"

    def edit(m: dict) -> None:
        first(m).update(file=name, sha256=__import__("hashlib").sha256(data).hexdigest(), bytes=len(data))

    with_manifest(store, edit, **{f"{DATA}/x".replace("/", "__"): file_entry(store, data)})


def absolute_manifest_name(store: Path, env: dict[str, Path]) -> None:
    """An absolute file name: the user's own file, a faithful copy of the shard, read as the store's."""
    m = manifest(store)
    local = env["sentinel_read"] / first(m)["file"]
    shutil.copyfile(env["run"] / DATA / first(m)["file"], local)
    with_manifest(store, lambda m: first(m).update(file=str(local)))


def symlinked_shard(store: Path, env: dict[str, Path]) -> None:
    """The first shard as a symlink (mode 120000) to the user's own copy of it: same bytes, not the store's."""
    m = manifest(store)
    local = env["sentinel_read"] / first(m)["file"]
    shutil.copyfile(env["run"] / DATA / first(m)["file"], local)
    recommit(store, {f"{DATA}/{first(m)['file']}": ("120000", "blob", blob(store, str(local).encode()))})


def card_outside(store: Path, env: dict[str, Path]) -> None:
    """The card's configs point outside the revision (a `../` glob and an absolute one)."""
    card = git(store, "cat-file", "blob", "main:README.md")
    card = card.replace(f"path: {DATA}/train-*.parquet", f"path: {DATA}/../../../../home/read/*.parquet", 1)
    assert "home/read" in card
    recommit(store, {"README.md": file_entry(store, card.encode())})


def card_absolute(store: Path, env: dict[str, Path]) -> None:
    card = git(store, "cat-file", "blob", "main:README.md")
    card = card.replace(f"path: {DATA}/train-*.parquet", f"path: {env['sentinel_read']}/*.parquet", 1)
    recommit(store, {"README.md": file_entry(store, card.encode())})


def card_unparsable(store: Path, env: dict[str, Path]) -> None:
    card = git(store, "cat-file", "blob", "main:README.md").replace("configs:", "configs: [\n  - {", 1)
    recommit(store, {"README.md": file_entry(store, card.encode())})


def altered_rows(store: Path, env: dict[str, Path]) -> None:
    """Rows altered, the manifest's sha256 and size updated, its content digest kept (it looks the same)."""
    m = manifest(store)
    path = env["scratch_build"] / first(m)["file"]
    table = pq.read_table(env["run"] / DATA / first(m)["file"])
    queries = table.column("query").to_pylist()
    queries[0] = "altered"
    pq.write_table(table.set_column(table.schema.get_field_index("query"), "query", pa.array(queries)), path)
    data = path.read_bytes()
    with_manifest(store, lambda m: first(m).update(sha256=sha256_file(path), bytes=len(data)),
                  **{f"{DATA}/{first(m)['file']}".replace("/", "__"): file_entry(store, data)})


def absurd_numbers(store: Path, env: dict[str, Path]) -> None:
    """Negative counts that add up (a consistent lie)."""
    def edit(m: dict) -> None:
        m["shards"][0]["rows_in"] = -1_000_000
        m["counts"]["rows_in"] = sum(s["rows_in"] for s in m["shards"])

    with_manifest(store, edit)


def negative_index(store: Path, env: dict[str, Path]) -> None:
    def edit(m: dict) -> None:
        m["shards"][0]["index"] = -1

    with_manifest(store, edit)


def oversized_manifest(store: Path, env: dict[str, Path]) -> None:
    def edit(m: dict) -> None:
        m["report"] = {"padding": "x" * (65 << 20)}

    with_manifest(store, edit)


def malformed_attestation(store: Path, env: dict[str, Path]) -> None:
    recommit(store, {f"attestations/{STAGE}/2026-01-01-x.json": file_entry(store, b'{"stage": "questions", ')})


def corrupt_object(store: Path, env: dict[str, Path]) -> None:
    """The first shard's git object damaged on disk (not a valid zlib stream any more)."""
    sha = git(store, "rev-parse", f"main:{DATA}/{first(manifest(store))['file']}").strip()
    path = store / "objects" / sha[:2] / sha[2:]
    raw = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(raw[:2] + bytes(b ^ 0x5A for b in raw[2:40]) + raw[40:])


def corrupt_manifest_object(store: Path, env: dict[str, Path]) -> None:
    sha = git(store, "rev-parse", f"main:manifests/{STAGE}.json").strip()
    path = store / "objects" / sha[:2] / sha[2:]
    path.chmod(0o644)
    path.write_bytes(zlib.compress(b"blob 5\0abc")[:-3])


ATTACKS = [traversing_tree_entries, traversing_manifest_name, absolute_manifest_name, symlinked_shard, card_outside,
           card_absolute, card_unparsable, altered_rows, absurd_numbers, negative_index, oversized_manifest,
           malformed_attestation, corrupt_object, corrupt_manifest_object]
# What every refusal must name (the file, field or value), in one line.
NAMES = {traversing_tree_entries.__name__: "evil.pth", traversing_manifest_name.__name__: "evil.pth",
         absolute_manifest_name.__name__: "home/read", symlinked_shard.__name__: "train-00000-of-00005.parquet",
         card_outside.__name__: "README.md", card_absolute.__name__: "README.md", card_unparsable.__name__: "README.md",
         altered_rows.__name__: "train-00000-of-00005.parquet", absurd_numbers.__name__: "shards.0.rows_in",
         negative_index.__name__: "shards.index", oversized_manifest.__name__: "manifests/questions.json",
         malformed_attestation.__name__: "attestations/questions/2026-01-01-x.json",
         corrupt_object.__name__: "train-00000-of-00005.parquet: corrupt git object",
         corrupt_manifest_object.__name__: "manifests/questions.json: corrupt git object"}
# `log` lists tags from manifests and reads no data file: for attacks on a data file's bytes alone it has nothing
# to refuse (it claims nothing about the bytes).
DATA_ONLY = {altered_rows.__name__, corrupt_object.__name__}


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def good(tmp_path_factory, pool) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("good")
    run = tiny_run(root / "run", pool, stages=[STAGE]).root
    publish(run, root / "store", [STAGE])
    return {"run": run, "store": root / "store"}


def snapshot(*roots: Path, skip: tuple[Path, ...] = ()) -> dict[str, bytes]:
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")):
            if any(p.is_relative_to(s) for s in skip):
                continue
            out[str(p)] = p.read_bytes() if p.is_file() and not p.is_symlink() else b"<dir or link>"
    return out


def pth_files() -> set[str]:
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return {str(p) for d in dirs if Path(d).is_dir() for p in Path(d).glob("*.pth")}


def run_cli(capfd, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    out, err = capfd.readouterr()
    return code, out + err


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.__name__)
def test_a_hostile_revision_is_refused_by_every_reader(attack, good, tmp_path, monkeypatch, capfd):
    env = {"run": good["run"], "sentinel_read": tmp_path / "home" / "read", "scratch_build": tmp_path / "build"}
    for d in ("home/sentinel", "home/read", "work", "build"):
        (tmp_path / d).mkdir(parents=True)
    store = tmp_path / "store"
    shutil.copytree(good["store"], store)
    attack(store, env)
    cache = tmp_path / "cache"  # the escape attempts aim from here at ../home/sentinel
    cache.mkdir()
    (cache / "models").symlink_to(cache_dir() / "models")  # the tiny model, built once for the session
    monkeypatch.setenv("SCALEQUEST_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "work")
    scratch = tmp_path / "scratch"
    skip = (cache, scratch, tmp_path / "build")
    before, pth = snapshot(tmp_path, good["run"], good["store"], skip=skip), pth_files()

    results = {
        "load": run_cli(capfd, "load", str(store), STAGE, "--revision", TAG),
        "diff": run_cli(capfd, "diff", f"{store}@{TAG}", f"{good['store']}@{TAG}"),
        "regenerate": run_cli(capfd, "regenerate", f"{store}@{TAG}", "--stage", STAGE, "--scratch", str(scratch)),
        "log": run_cli(capfd, "log", str(store)),
        "publish": run_cli(capfd, "publish", str(good["run"]), "--to", str(store)),
    }
    for command, (code, text) in results.items():
        if command == "log" and attack.__name__ in DATA_ONLY:
            assert code == 0 and "same" not in text, text
            continue
        assert code != 0, f"{command} exited 0 on {attack.__name__}:\n{text}"
        assert "Traceback" not in text and "unexpected failure" not in text, f"{command}: {text}"
        lowered = text.lower()
        assert "same data" not in lowered and "identical" not in lowered and "reproduce:" not in lowered, text
        assert " 1/1 shards reproduce" not in text, text
        if code == 2 and not (command == "publish" and attack.__name__ in DATA_ONLY):  # (publish: a tag clash)
            errors = [line for line in text.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and NAMES[attack.__name__] in errors[0], text
        elif code == 1:  # diff or regenerate: a verdict naming the file as corrupt
            assert "corrupt" in text.lower() and NAMES[attack.__name__] in text, text
    assert not any(code == 3 for code, _ in results.values())
    assert snapshot(tmp_path, good["run"], good["store"], skip=skip) == before
    assert list((tmp_path / "home" / "sentinel").iterdir()) == []
    assert pth_files() == pth
    assert not Path("/tmp/pwned").exists()
