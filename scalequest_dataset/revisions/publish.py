"""`scalequest publish`: every complete stage of a run directory becomes one commit and a tag in a store.

- Verified first: every file of every stage to publish is checked against the run's records (size, sha256)
  before anything is written; a changed byte is refused, naming the file and both digests.
- One stage = one atomic commit (its shards, its manifest, the re-rendered card), then the tag
  `<prefix>-<stage>`; the final stage also tags `<prefix>`. Tags move atomically (compare-and-swap).
- Idempotent: a stage whose data is identical (`Manifest.identity`: the recipe and its result) to what its tag,
  or else the branch, already holds makes no commit, whatever machine, library versions or Parquet writer made
  it; when only the execution differs, that is said ("identical data, reproduced in another environment") with
  the fields that differ. A tag that holds other content for the stage is refused unless `force`.
- Messages say only what happened: "committed" only for a new commit, "moved" only for a moved tag."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..recipe.params import ConfigError
from ..run import RunLayout
from ..run import records as rec
from ..run.files import file_problem
from ..run.plan import read_manifest
from ..run.records import FileRecord, Manifest, environment_differences
from ..stages import STAGE_ORDER
from .card import render_card
from .figures import IMAGES, OVERVIEW, is_stage_image, overview_figures, stage_figures
from .locator import RunSource, StoreSource
from .stores import RepoLayout, StaleParentError, Store, StoreError, VerificationError, open_store
from .stores.base import PartialPublish, expect_transfer, transferred
from .verify import Attestation, parse_record

ATTEMPTS = 8  # commits on a branch that others move: re-read and rebuild, waiting longer each time


def backoff(attempt: int, base: float = 0.2, cap: float = 10.0) -> None:
    """Before attempt `attempt` (0: none): a random wait up to base * 2**attempt (capped), so publishers that
    collided do not collide again in step ("full jitter")."""
    if attempt:
        import random
        import time

        time.sleep(random.SystemRandom().uniform(0, min(cap, base * 2 ** attempt)))


@dataclass
class PublishResult:
    stage: str
    commit: str  # the commit the stage's tag points to now
    created: bool  # False: no commit was made (identical data was already there)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> "created" | "moved from <commit>" | "unchanged"
    files: int = 0  # files in the new commit (0 when none was made)
    reproduced: list[str] = field(default_factory=list)  # identical data, another execution: what differs

    def describe(self) -> str:
        if self.created:
            what = f"committed {self.commit[:12]} ({self.files} files)"
        elif self.reproduced:
            what = (f"identical data, reproduced in another environment; no commit (kept {self.commit[:12]}); "
                    f"differs in: {', '.join(self.reproduced)}")
        else:
            what = f"identical data already at {self.commit[:12]}; no commit"
        tags = "; ".join(f"tag {t} {how}" for t, how in self.tags.items())
        return f"{self.stage:<12} {what}; {tags}"


def publish(run_dir: str | Path, target: str | Path, stages: list[str] | None = None, tag_prefix: str = "v1",
            force: bool = False, say: Callable[[str], None] | None = None) -> list[PublishResult]:
    layout = RunLayout(run_dir).require()
    if not tag_prefix or "/" in tag_prefix or any(c.isspace() for c in tag_prefix):
        raise ConfigError(f"--tag-prefix {tag_prefix!r}: tags may not be empty or contain '/' or spaces")
    done = layout.complete_stages(STAGE_ORDER)
    for stage in stages or []:
        if stage not in STAGE_ORDER:
            raise ConfigError(f"unknown stage {stage!r}: allowed are {', '.join(STAGE_ORDER)}")
        if stage not in done:
            raise ConfigError(f"stage {stage!r} is not complete in {layout.root} (complete: {', '.join(done) or 'none'})")
    todo = [s for s in STAGE_ORDER if s in (stages or done)]
    if not todo:
        raise ConfigError(f"{layout.root} has no complete stage to publish")
    manifests = {s: read_manifest(layout, s) for s in todo}
    checked = [f for m in manifests.values() for f in m.files().values()]  # type: ignore[union-attr]
    expect_transfer(sum(f.bytes for f in checked), len(checked))
    for manifest in manifests.values():  # every byte checked before anything is written
        verify_run_files(layout, manifest)  # type: ignore[arg-type]
    if layout.remote:  # on an object store: its files were fetched and checked into this machine's folder for it
        layout = RunLayout(layout.local / "verified")
    store = open_store(target, create=True)
    start = store.head()
    checks = {s: check_committable(layout, store, manifests[s], tag_prefix, force,  # type: ignore[arg-type]
                                   final=(s == STAGE_ORDER[-1])) for s in todo}  # every stage before any commit
    results: list[PublishResult] = []
    for stage in todo:
        try:
            result = publish_stage(layout, store, manifests[stage], tag_prefix, force,  # type: ignore[arg-type]
                                   final=(stage == STAGE_ORDER[-1]), check=checks[stage])
        except Exception as exc:
            raise _partial(store, start, results, todo, stage, exc) from exc
        results.append(result)
        if say:
            say(result.describe())
    return results


def _partial(store: Store, start: str | None, done: list[PublishResult], todo: list[str], stage: str,
             exc: Exception) -> Exception:
    """`exc` as it is when nothing was written yet; else a PartialPublish saying what is in the store."""
    try:
        moved = store.head() != start
    except Exception:
        moved = True
    if not done and not moved:
        return exc
    rest = todo[todo.index(stage):]
    have = ", ".join(f"{r.stage} ({', '.join(r.tags)})" for r in done) or "none"
    return PartialPublish(f"{store.location}: the version is half published: published {have}; stage {stage!r} "
                          f"failed ({type(exc).__name__}: {str(exc).strip()[:300]}); not published: "
                          f"{', '.join(rest)}. Re-run the same command to complete it (what is published makes no "
                          "new commit)")


@dataclass
class StageCheck:
    """What a stage's publication found in the store before the first commit: the tags it will set, where they
    point, and for each the store's manifest if it holds the same data there."""

    tags: list[str]
    existing: dict[str, str]
    same: dict[str, Manifest | None]


def check_committable(layout: RunLayout, store: Store, manifest: Manifest, prefix: str, force: bool, final: bool
                      ) -> StageCheck:
    """Refuse, before anything is written, what would stop this stage half way: a file name a reader of the
    revision would refuse (the path check every reader applies) and a tag that holds other content."""
    from .verify import check_path

    stage = manifest.stage
    for name in manifest.files():
        check_path(RepoLayout.data(stage, name), RepoLayout.data_folder(stage), f"{layout.root} stage {stage!r}")
    tags = [f"{prefix}-{stage}"] + ([prefix] if final else [])
    existing = store.tags()
    same = {tag: same_data(store, existing.get(tag), manifest) for tag in tags}
    for tag in tags:
        if tag in existing and not force and same[tag] is None:
            raise _clash(store, tag, existing[tag], stage)
    return StageCheck(tags, existing, same)


def verify_run_files(layout: RunLayout, manifest: Manifest) -> None:
    """Every file the manifest names, as it is on disk now, against the manifest (size and sha256). A run directory
    on an object store has each file fetched (`RunSource.file`: a local copy, checked) under `layout.local`."""
    if layout.remote:
        source = RunSource(layout.root)
        for info in manifest.files().values():
            try:
                source.file(manifest.stage, info)
            except VerificationError as exc:
                raise VerificationError(f"{exc}; nothing was published") from None
            transferred(info.bytes)
        return
    for info in manifest.files().values():
        path = layout.data_dir(manifest.stage) / info.file
        check_bytes(path, info, f"{layout.root} stage {manifest.stage!r}")


def check_bytes(path: Path, info: FileRecord, where: str) -> None:
    problem = file_problem(path, info.sha256)
    transferred(info.bytes)
    if problem:
        raise VerificationError(f"{path} ({where}) {problem}; nothing was published")


def store_manifest(store: Store, stage: str, commit: str | None) -> Manifest | None:
    """The stage's manifest at `commit` of a store, read as every reader reads a revision (`StoreSource`: its
    file names, card and manifests checked; it is someone else's word)."""
    return store_manifests(store, commit).get(stage)


def same_data(store: Store, commit: str | None, manifest: Manifest) -> Manifest | None:
    """The store's manifest of the stage at `commit` if the store holds the same data as the run there, else None.
    The store's manifest only proposes it (its identity equals the run's); its bytes decide: every file is fetched
    and checked, its rows' content recomputed (`Source.file`), so a damaged or altered file is never "the same"."""
    if commit is None:
        return None
    source = StoreSource(store, commit)
    theirs = source.manifests().get(manifest.stage)
    if theirs is None or theirs.identity() != manifest.identity():
        return None
    try:
        for info in theirs.files().values():
            source.file(manifest.stage, info)
    except VerificationError:
        return None
    return theirs


def publish_stage(layout: RunLayout, store: Store, manifest: Manifest, prefix: str, force: bool, final: bool,
                  check: StageCheck | None = None) -> PublishResult:
    stage = manifest.stage
    check = check or check_committable(layout, store, manifest, prefix, force, final)
    tags, existing, same = check.tags, check.existing, check.same
    tagged = same[tags[0]]
    if tagged is not None:
        result = PublishResult(stage, existing[tags[0]], False, reproduced=environment_differences(tagged, manifest))
    else:
        result = _commit_stage(layout, store, manifest, prefix)
    for tag in tags:
        old = existing.get(tag)
        if old == result.commit or (old is not None and not force and same[tag] is not None):
            result.tags[tag] = "unchanged"
        elif old is None:
            result.tags[tag] = _create_tag(store, tag, result, manifest)
        else:
            store.move_tag(tag, result.commit, old)  # compare-and-swap: refused if it moved since it was read
            result.tags[tag] = f"moved from {old[:12]}"
    return result


def _clash(store: Store, tag: str, commit: str, stage: str, note: str = "") -> StoreError:
    return StoreError(f"tag {tag!r} already exists in {store.location} at {commit[:12]} with other content for "
                      f"stage {stage!r}{note}; use another --tag-prefix, or --force to move it")


def _create_tag(store: Store, tag: str, result: PublishResult, manifest: Manifest) -> str:
    """Create-only (the store refuses an existing tag atomically), so the clash check above cannot be overtaken by
    another publisher: if one created the tag in between, what it points at now decides, checked again. Tags are
    created in a fixed order, stopping at the first clash, so one publisher wins them all."""
    try:
        store.create_tag(tag, result.commit, f"stage {manifest.stage}")
        return "created"
    except StoreError:
        now = store.tags().get(tag)
        if now is None:
            raise
        if now == result.commit or same_data(store, now, manifest) is not None:
            return "unchanged (created by another publisher meanwhile)"
        note = (f" (another publisher created it meanwhile; this stage's commit {result.commit[:12]} is on the "
                "branch, untagged)") if result.created else " (another publisher created it meanwhile)"
        raise _clash(store, tag, now, manifest.stage, note) from None


def _commit_stage(layout: RunLayout, store: Store, manifest: Manifest, prefix: str) -> PublishResult:
    """One commit with the stage's files, manifest, card and the card's images - unless the branch already holds
    identical data."""
    stage = manifest.stage
    figures = stage_figures(stage, {split: [layout.data_dir(stage) / f.file for f in manifest.split_files(split)]
                                    for split in manifest.splits()})  # read once, whatever the attempts
    for attempt in range(ATTEMPTS):
        backoff(attempt)
        head = store.head()
        at_head = same_data(store, head, manifest)
        if head is not None and at_head is not None:
            return PublishResult(stage, head, False, reproduced=environment_differences(at_head, manifest))
        remote = store.files(head) if head else {}
        published = with_input_location(manifest, store, prefix)
        manifests = _branch_manifests(store, head, published)
        add: dict[str, Path | bytes] = {
            RepoLayout.data(stage, name): layout.data_dir(stage) / name for name in manifest.files()}
        add[RepoLayout.manifest(stage)] = rec.to_bytes(published)
        add.update(figures)
        add.update(overview_figures(manifests))  # the funnel and drop reasons of every stage after this commit
        stale = [p for p in remote if p not in add and (p.startswith(RepoLayout.data_folder(stage))
                                                        or is_stage_image(p, stage) or p in OVERVIEW)]
        images = sorted({p for p in [*remote, *add] if p.startswith(f"{IMAGES}/") and p not in stale})
        add[RepoLayout.CARD] = _card(store, head, remote, prefix, published, images=images,
                                     manifests=manifests).encode("utf-8")
        message = (f"Publish stage {stage}: {manifest.counts.rows_out:,} rows, fingerprint {manifest.fingerprint[:12]}")
        try:
            commit = store.commit(add, stale, message, parent=head)
        except StaleParentError:
            continue  # someone committed in between: re-read the branch and rebuild the commit
        return PublishResult(stage, commit, True, files=len(add))
    raise StoreError(f"{store.location}: the branch kept moving during {ATTEMPTS} attempts to publish {stage!r}; "
                     "nothing was published, try again")


def with_input_location(manifest: Manifest, store: Store, prefix: str) -> Manifest:
    """The manifest plus where its input lives in this store (the input stage's tag and commit)."""
    ref = manifest.recipe.input
    if ref is None:
        return manifest
    tag = f"{prefix}-{ref.stage}"
    commit = store.tags().get(tag)
    ref = ref.model_copy(update={"revision": tag if commit else None, "commit": commit})
    return manifest.model_copy(update={"recipe": manifest.recipe.model_copy(update={"input": ref})})


def store_manifests(store: Store, commit: str | None) -> dict[str, Manifest]:
    return StoreSource(store, commit).manifests() if commit is not None else {}


def _branch_manifests(store: Store, head: str | None, update: Manifest | None = None) -> dict[str, Manifest]:
    """The stages of the branch after this commit, in pipeline order (`update` replacing its stage)."""
    manifests = {**store_manifests(store, head), **({update.stage: update} if update else {})}
    return {s: manifests[s] for s in STAGE_ORDER if s in manifests}


def _card(store: Store, head: str | None, remote: dict[str, Any], prefix: str, update: Manifest | None = None,
          new_attestations: tuple[dict[str, Any], ...] = (), images: list[str] | None = None,
          manifests: dict[str, Manifest] | None = None) -> str:
    """The card of the branch after this commit: its stages (with `update` replacing its stage), tags,
    attestations, and the images it holds (default: those at `head`)."""
    if manifests is None:
        manifests = _branch_manifests(store, head, update)
    tags = store.tags()
    stage_tags = {s: f"{prefix}-{s}" if ((update and s == update.stage) or f"{prefix}-{s}" in tags) else None
                  for s in manifests}
    attestations = [*_attestations(store, head, remote), *new_attestations]
    loader = "datasets" if store.location.startswith("hf://") else "scalequest_dataset"
    if images is None:
        images = sorted(p for p in remote if p.startswith(f"{IMAGES}/"))
    return render_card(store.location.removeprefix("hf://datasets/"), manifests, stage_tags, loader, attestations,
                       images)


def _attestations(store: Store, head: str | None, remote: dict[str, Any]) -> list[dict[str, Any]]:
    """The attestations at `head`, each validated strictly (a malformed one is an error naming it)."""
    if head is None:
        return []
    return [parse_record(Attestation, store.read(p, head), f"{store.location}@{head[:12]} {p}").model_dump()
            for p in sorted(remote) if p.startswith(f"{RepoLayout.ATTESTATIONS}/") and p.endswith(".json")]


def attest(store: Store, revision: str, manifest: Manifest, report: Any, records: list[Any]) -> str:
    """Record a verified reproduction of `manifest`'s stage: one small JSON file under attestations/<stage>/ in its
    own commit on the branch (the card, re-rendered, lists it). Nothing else in the store changes. Returns the
    commit."""
    import hashlib
    from datetime import datetime, timezone

    from ..run.files import json_bytes

    envs = [r.execution.environment for r in records]
    engines: dict[str, Any] = {}
    for r in records:
        engines.update(r.execution.engines)
    summary = ", ".join(sorted({f"{e.get('engine')} {e.get('version')} on {e.get('device')} ({e.get('dtype')})"
                                for e in engines.values()})) or "no engine"
    libs = envs[0].get("libraries", {}) if envs else {}
    body = {
        "stage": manifest.stage, "revision": revision, "commit": store.resolve(revision),
        "fingerprint": manifest.fingerprint, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "compared": ["content digest", "sha256"], "shards_checked": len(report.shards),
        "shards_matched": sum(s.matches for s in report.shards),
        "byte_identical": sum(s.byte_identical for s in report.shards),
        "digests": {f.file: {"content": f.actual_content, "sha256": f.actual_sha256}
                    for s in report.shards for f in s.files},
        "environment": envs[0] if envs else {}, "engines": engines,
        "environment_summary": f"{summary}; torch {libs.get('torch', '-')}, pyarrow {libs.get('pyarrow', '-')}",
    }
    blob = json_bytes(Attestation.model_validate(body).model_dump(mode="json"))  # what a reader will accept
    name = RepoLayout.attestation(manifest.stage, f"{body['date'][:10]}-{hashlib.sha256(blob).hexdigest()[:12]}.json")
    for attempt in range(ATTEMPTS):
        backoff(attempt)
        head = store.head()
        remote = store.files(head) if head else {}
        prefix = revision.rsplit("-", 1)[0] if revision.endswith(f"-{manifest.stage}") else "v1"
        add: dict[str, Path | bytes] = {name: blob, RepoLayout.CARD: _card(store, head, remote, prefix,
                                                                        new_attestations=(body,)).encode("utf-8")}
        try:
            return store.commit(add, [], f"Attest stage {manifest.stage}: {body['shards_matched']} of "
                                f"{body['shards_checked']} shards reproduced ({summary})", parent=head)
        except StaleParentError:
            continue
    raise StoreError(f"{store.location}: the branch kept moving; the attestation was not recorded, try again")


def log(target: str | Path) -> list[dict[str, Any]]:
    """Every tag of a store with its stage, rows and fingerprint (newest commit first). `target` is read as every
    command reads where a version lives (a local store, ORG/NAME or hf://...)."""
    from .locator import locate, open_location

    store = open_location(locate(target))
    order = {c.id: i for i, c in enumerate(store.commits())}
    rows = []
    for tag, commit in store.tags().items():
        stage = next((s for s in STAGE_ORDER if tag.endswith(f"-{s}")), STAGE_ORDER[-1])
        m = store_manifest(store, stage, commit)
        rows.append({"tag": tag, "commit": commit, "stage": stage, "rows": m.counts.rows_out if m else None,
                     "fingerprint": m.fingerprint if m else None, "_order": order.get(commit, len(order))})
    rows.sort(key=lambda r: (r["_order"], r["tag"]))
    for r in rows:
        del r["_order"]
    return rows
