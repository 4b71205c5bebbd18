"""`scalequest publish`: every stage of a run directory becomes one commit and a tag in a store.

One stage = one atomic commit (its shards, its manifest, the re-rendered card), then the tag
`<prefix>-<stage>`; the final stage also tags `<prefix>`. Identical content makes no commit. A tag that
exists with other content is refused before anything is written, unless `force`."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .card import render_card
from .config import STAGE_ORDER, ConfigError
from .storage import read_json
from .store import StaleParentError, Store, StoreError, open_store
from .store.base import Digest

ATTEMPTS = 3


@dataclass
class PublishResult:
    stage: str
    commit: str  # the commit the stage's tag points to
    created: bool  # False: identical content was already there, no commit made
    tags: list[str]

    def describe(self) -> str:
        what = f"committed {self.commit[:12]}" if self.created else f"unchanged at {self.commit[:12]} (no new commit)"
        return f"{self.stage:<12} {what}; tags: {', '.join(self.tags)}"


def complete_stages(run_dir: Path) -> list[str]:
    return [s for s in STAGE_ORDER if (run_dir / "manifests" / f"{s}.json").exists()]


def publish(run_dir: str | Path, target: str | Path, stages: list[str] | None = None, tag_prefix: str = "v1",
            force: bool = False) -> list[PublishResult]:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no config.yaml)")
    if not tag_prefix or "/" in tag_prefix or any(c.isspace() for c in tag_prefix):
        raise ConfigError(f"--tag-prefix {tag_prefix!r}: tags may not be empty or contain '/' or spaces")
    done = complete_stages(run_dir)
    for stage in stages or []:
        if stage not in STAGE_ORDER:
            raise ConfigError(f"unknown stage {stage!r}: allowed are {', '.join(STAGE_ORDER)}")
        if stage not in done:
            raise ConfigError(f"stage {stage!r} is not complete in {run_dir} (complete: {', '.join(done) or 'none'})")
    todo = stages or done
    if not todo:
        raise ConfigError(f"{run_dir} has no complete stage to publish")
    store = open_store(target, create=True)
    return [publish_stage(run_dir, store, stage, tag_prefix, force, final=(stage == "default")) for stage in todo]


def publish_stage(run_dir: Path, store: Store, stage: str, prefix: str, force: bool, final: bool) -> PublishResult:
    files = _stage_files(run_dir, stage)
    tags = [f"{prefix}-{stage}"] + ([prefix] if final else [])
    for tag in tags:  # refuse a clash before writing anything
        _check_tag(store, tag, stage, files, force, run_dir)
    for _ in range(ATTEMPTS):
        head = store.head()
        remote = store.files(head) if head else {}
        add = _changed(files, remote, store, stage, head, prefix, run_dir)
        stale = [p for p in remote if p.startswith(f"data/{stage}/") and p not in add and p not in files]
        if not add and not stale:
            commit, created = head, False
            break
        manifest = read_json(run_dir / "manifests" / f"{stage}.json")
        message = (f"Publish stage {stage}: {manifest['counts']['rows_out']:,} rows, "
                   f"fingerprint {manifest['fingerprint'][:12]}")
        try:
            commit, created = store.commit(add, stale, message, parent=head), True
            break
        except StaleParentError:
            continue  # someone committed in between: re-read the branch and rebuild the commit
    else:
        raise StoreError(f"{store.location}: the branch kept moving during {ATTEMPTS} attempts to publish {stage!r}; "
                         "nothing was published, try again")
    assert commit is not None
    existing = store.tags()
    for tag in tags:
        if existing.get(tag) == commit:
            continue
        if tag in existing:
            if _tag_has_content(store, existing[tag], stage, files, run_dir):
                continue
            store.delete_tag(tag)  # force: _check_tag refused otherwise
        store.create_tag(tag, commit, f"stage {stage}")
    return PublishResult(stage, commit, created, tags)


def _stage_files(run_dir: Path, stage: str) -> dict[str, Path]:
    files = {f"data/{stage}/{p.name}": p for p in sorted((run_dir / "data" / stage).glob("*.parquet"))}
    manifest = read_json(run_dir / "manifests" / f"{stage}.json")
    named = {f"data/{stage}/{f['file']}" for s in manifest["shards"] for f in s["files"].values()}
    if set(files) != named:
        raise StoreError(f"{run_dir}/data/{stage} does not match its manifest (extra or missing shards): "
                         f"re-run `scalequest run` on it to repair")
    files[f"manifests/{stage}.json"] = run_dir / "manifests" / f"{stage}.json"
    return files


def published_manifest(run_dir: Path, stage: str, store: Store, prefix: str) -> bytes:
    """The run's manifest plus where its input lives in this store (the input stage's tag and commit)."""
    manifest = copy.deepcopy(read_json(run_dir / "manifests" / f"{stage}.json"))
    input_stage = manifest["input"]["stage"]
    if input_stage:
        tag = f"{prefix}-{input_stage}"
        commit = store.tags().get(tag)
        manifest["input"].update(revision=tag if commit else None, commit=commit)
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _changed(files: dict[str, Path], remote: dict[str, Digest], store: Store, stage: str, head: str | None,
             prefix: str, run_dir: Path) -> dict[str, Path | bytes]:
    add: dict[str, Path | bytes] = {}
    for path, local in files.items():
        content: Path | bytes = published_manifest(run_dir, stage, store, prefix) if path.startswith("manifests/") \
            else local
        digest = remote.get(path)
        if digest is None or not (digest.matches(data=content) if isinstance(content, bytes)
                                  else digest.matches(data_path=content)):
            add[path] = content
    manifests = {p.removeprefix("manifests/").removesuffix(".json"): json.loads(store.read(p, head))
                 for p in remote if p.startswith("manifests/") and p.endswith(".json") and p not in add} if head else {}
    manifest_path = f"manifests/{stage}.json"
    manifests[stage] = json.loads(add[manifest_path] if manifest_path in add else store.read(manifest_path, head))
    existing_tags = store.tags()
    tags = {s: f"{prefix}-{s}" if (s == stage or f"{prefix}-{s}" in existing_tags) else None for s in manifests}
    loader = "datasets" if store.location.startswith("hf://") else "scalequest_dataset"
    repo = store.location.removeprefix("hf://datasets/")
    readme = render_card(repo, manifests, tags, loader).encode()
    if "README.md" not in remote or not remote["README.md"].matches(data=readme):
        add["README.md"] = readme
    return add


def _tag_has_content(store: Store, commit: str, stage: str, files: dict[str, Path], run_dir: Path) -> bool:
    """Does the tagged commit hold exactly this stage's shards (manifests compared by fingerprint and hashes)?"""
    remote = {p: d for p, d in store.files(commit).items() if p.startswith(f"data/{stage}/")}
    local = {p: f for p, f in files.items() if p.startswith("data/")}
    if set(remote) != set(local) or not all(remote[p].matches(data_path=local[p]) for p in local):
        return False
    theirs = json.loads(store.read(f"manifests/{stage}.json", commit))
    ours = read_json(run_dir / "manifests" / f"{stage}.json")
    return theirs["fingerprint"] == ours["fingerprint"]


def _check_tag(store: Store, tag: str, stage: str, files: dict[str, Path], force: bool, run_dir: Path) -> None:
    commit = store.tags().get(tag)
    if commit and not force and not _tag_has_content(store, commit, stage, files, run_dir):
        raise StoreError(f"tag {tag!r} already exists in {store.location} at {commit[:12]} with other content for "
                         f"stage {stage!r}; use another --tag-prefix, or --force to move it")


def log(target: str | Path) -> list[dict[str, Any]]:
    """Every tag of a store with its stage, rows and fingerprint (newest commit first)."""
    store = open_store(target)
    order = {c.id: i for i, c in enumerate(store.commits())}
    rows = []
    for tag, commit in store.tags().items():
        files = store.files(commit)
        stage = next((s for s in STAGE_ORDER if tag.endswith(f"-{s}")), "default")
        path = f"manifests/{stage}.json"
        m = json.loads(store.read(path, commit)) if path in files else None
        rows.append({"tag": tag, "commit": commit, "stage": stage, "rows": m["counts"]["rows_out"] if m else None,
                     "fingerprint": m["fingerprint"] if m else None, "_order": order.get(commit, len(order))})
    rows.sort(key=lambda r: (r["_order"], r["tag"]))
    for r in rows:
        del r["_order"]
    return rows
