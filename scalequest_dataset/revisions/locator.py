"""Where a version of the dataset lives, parsed in one place for every command (load, diff, regenerate, log,
publish --to, the datasets builder):

    RUN_DIR                         a run directory (no revisions): a path, or a URL (s3://bucket/run)
    PATH[@REV]                      a local store (REV: a tag, branch or commit; default main)
    ORG/NAME[@REV]                  a Hub dataset repo
    hf://datasets/ORG/NAME[@REV]    the same, spelled as a URL

`locate` parses; `open_source` opens. A store's kind comes from the registry in `stores` (a kind = one file and
one line there). Manifests are read eagerly (small, under a size cap) and validated strictly; a revision from
someone else is untrusted input. Files are got only through `Source.file`, the one function that fetches a file
of a revision and verifies it (see `verify`)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..recipe.params import ConfigError
from ..run.layout import RunLayout
from ..run.records import FileRecord, Manifest
from ..run.urlpath import UrlPath, as_path
from ..stages import STAGE_ORDER
from .stores import KINDS, RepoLayout, Store, StoreError, VerificationError, open_store, store_kind
from .verify import (
    Attestation,
    Checked,
    card_globs,
    check_manifest,
    check_path,
    file_problem,
    parse_record,
    too_big,
)


@dataclass(frozen=True)
class Location:
    """A parsed version address: `kind` is "run" or a store kind from the registry ("git", "hub")."""

    kind: str
    target: str  # the run directory, the store's path or its URL (hf://datasets/ORG/NAME)
    revision: str | None = None

    def __str__(self) -> str:
        return self.target + (f"@{self.revision}" if self.revision else "")


def locate(text: str | Path, revision: str | None = None) -> Location:
    """`text` as a Location; `revision` is the `--revision` of commands that take it apart from the path."""
    raw = str(text)
    location, at, rev = raw.rpartition("@") if "@" in raw and not Path(raw).expanduser().exists() else (raw, "", "")
    if at and not rev:
        raise ConfigError(f"{raw!r}: nothing after '@' (write PATH@REV, ORG/NAME@REV, or leave @REV out)")
    if rev and revision and rev != revision:
        raise ConfigError(f"{raw!r} names revision {rev!r} and --revision says {revision!r}: give one")
    rev = rev or revision or None
    scheme = location.split("://", 1)[0] if "://" in location else None
    if scheme in ("file", "local"):
        location, scheme = str(as_path(location)), None
    if scheme is not None and scheme not in KINDS:  # a run directory on an fsspec filesystem (s3://...)
        if not RunLayout.is_run_dir(location):
            raise ConfigError(f"{location} is not a run directory (no config.yaml there) and no store serves "
                              f"{scheme}:// (stores: a local path, {', '.join(f'{k}://' for k in KINDS if k != 'file')})")
        if rev:
            raise ConfigError(f"{raw}: a run directory has no revisions (publish it to a store first)")
        return Location("run", location)
    if scheme is not None:
        return Location(store_kind(location), location, rev)
    path = Path(location).expanduser()
    if RunLayout.is_run_dir(path):
        if rev:
            raise ConfigError(f"{raw}: a run directory has no revisions (publish it to a store first)")
        return Location("run", str(path))
    if path.exists():
        return Location(store_kind(str(path)), str(path), rev)
    if _looks_local(location):
        raise ConfigError(f"{location} does not exist (not a run directory or a store); for a Hub repo write "
                          f"ORG/NAME@REV or hf://datasets/ORG/NAME@REV")
    return Location(store_kind("hf://"), f"hf://datasets/{location}", rev)


def _looks_local(location: str) -> bool:
    """A path, not a Hub repo id: absolute or relative-explicit, more than ORG/NAME, or its first folder exists."""
    parts = location.split("/")
    return (location.startswith((".", "/", "~")) or len(parts) != 2 or not all(parts)
            or Path(parts[0]).expanduser().is_dir())


def open_location(loc: Location, create: bool = False) -> Store:
    """The store a Location names (a run directory is not a store)."""
    if loc.kind == "run":
        raise ConfigError(f"{loc.target} is a run directory, not a store (publish it to a store first)")
    return open_store(loc.target, create=create)


class Source:
    """A version's manifests and its verified files."""

    label: str

    def __init__(self) -> None:
        self._checked: dict[tuple[str, str], Checked] = {}
        self._rows_checked: set[tuple[str, str]] = set()  # files whose rows' digest was recomputed, not only bytes

    def manifests(self) -> dict[str, Manifest]:
        raise NotImplementedError

    def file(self, stage: str, info: FileRecord, rows: bool = True) -> Checked:
        """One file of `stage`, as a local path whose bytes passed every check: its path is safe, its size and
        sha256 match its record, and its rows' content digest, recomputed here, matches the record's. Raises
        UnsafeRevision or VerificationError naming the file. Checked once per source.

        `rows=False`: the bytes only (size, sha256), for a reader that decides nothing from the record's content
        digest: it compares the rows themselves, or only that two files' bytes hash alike (then they hold the same
        rows, whatever a record says about them). A file fetched from a store is checked in full all the same."""
        key = (stage, info.file)
        if key not in self._checked or (rows and key not in self._rows_checked):
            path = check_path(RepoLayout.data(stage, info.file), RepoLayout.data_folder(stage), self.label)
            self._checked[key] = self._fetch(path, info, rows)
            if rows or self._fetch_checks_rows:
                self._rows_checked.add(key)
        return self._checked[key]

    _fetch_checks_rows = False  # a store's fetch always checks the rows (before the copy gets its cached name)

    def _fetch(self, path: str, info: FileRecord, rows: bool = True) -> Checked:
        raise NotImplementedError

    def _manifest(self, stage: str, blob: bytes, where: str) -> Manifest:
        return check_manifest(parse_record(Manifest, blob, where), stage, where)


class RunSource(Source):
    def __init__(self, root: str | Path | UrlPath) -> None:
        super().__init__()
        self.layout = RunLayout(root)
        self.label = str(root)
        self._manifests: dict[str, Manifest] | None = None

    def manifests(self) -> dict[str, Manifest]:
        if self._manifests is None:
            self._manifests = {}
            for s in self.layout.complete_stages(STAGE_ORDER):
                path = self.layout.manifest(s)
                too_big(path.stat().st_size, str(path))
                self._manifests[s] = self._manifest(s, path.read_bytes(), str(path))
        return self._manifests

    def _fetch(self, path: str, info: FileRecord, rows: bool = True) -> Checked:
        if isinstance(self.layout.root, UrlPath):
            return self._download(path, info, rows)
        local = self.layout.root / path
        if local.parent.resolve() != (self.layout.root.resolve() / Path(path).parent):
            raise VerificationError(f"{self.label}: {path} is reached through a symlink; not read")
        problem, checked = file_problem(local, info, content=rows)
        if problem:
            raise VerificationError(f"{self.label}: {path} {problem} (the run's bytes and manifest disagree)")
        return checked  # type: ignore[return-value]

    def _download(self, path: str, info: FileRecord, rows: bool) -> Checked:
        """A run directory on an object store: its file copied into this machine's folder for the run, checked
        under a temporary name, then renamed. Fetched afresh by each source: unlike a commit, a run directory's
        object can be rewritten (a shard redone), so an older copy says nothing about it."""
        dest = self.layout.local / "verified" / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            remote = self.layout.root / path
            try:
                remote.fs.get_file(remote.path, str(tmp))
            except FileNotFoundError:
                raise VerificationError(f"{self.label}: {path} is missing (the run's bytes and manifest disagree)") \
                    from None
            problem, checked = file_problem(tmp, info, content=rows)
            if checked is None:
                raise VerificationError(f"{self.label}: {path} {problem} (the run's bytes and manifest disagree)")
            os.replace(tmp, dest)
            return Checked(dest, checked.bytes, checked.sha256, checked.content)
        finally:
            tmp.unlink(missing_ok=True)


class StoreSource(Source):
    def __init__(self, store: Store, revision: str) -> None:
        super().__init__()
        self.store = store
        self.revision = revision
        self.commit = store.resolve(revision)
        self.label = f"{store.location}@{revision}"
        self._files = None
        self._card: dict[str, dict[str, list[str]]] | None = None
        self._manifests: dict[str, Manifest] | None = None

    def files(self) -> dict:
        """Every file of the revision (each path checked by the store's listing)."""
        if self._files is None:
            self._files = self.store.files(self.commit)
        return self._files

    def card(self) -> dict[str, dict[str, list[str]]]:
        """The card's `configs:` globs, every one checked ({} for a revision without a card)."""
        if self._card is None:
            has = RepoLayout.CARD in self.files()
            self._card = card_globs(self.store.read(RepoLayout.CARD, self.commit), f"{self.label} {RepoLayout.CARD}") \
                if has else {}
        return self._card

    def manifests(self) -> dict[str, Manifest]:
        """Every stage's manifest, once the revision's file names and its card's paths passed the path check."""
        if self._manifests is None:
            files = self.files()
            self.card()
            for path in sorted(files):  # records of the revision, all validated: a malformed one is named
                if path.startswith(f"{RepoLayout.ATTESTATIONS}/") and path.endswith(".json"):
                    parse_record(Attestation, self.store.read(path, self.commit), f"{self.label} {path}")
            self._manifests = {}
            for s in STAGE_ORDER:
                path = RepoLayout.manifest(s)
                if path in files:
                    where = f"{self.label} {path}"
                    self._manifests[s] = self._manifest(s, self.store.read(path, self.commit), where)
        return self._manifests

    def at(self, commit: str) -> StoreSource:
        """The same store at another commit (where a manifest says its input was published)."""
        return StoreSource(self.store, commit)

    _fetch_checks_rows = True

    def _fetch(self, path: str, info: FileRecord, rows: bool = True) -> Checked:
        """From the cache if its copy passes the check; else fetched to a temporary name, checked, renamed. A copy
        that fails is fetched again once (fresh) before the store is blamed; a damaged cache is said, by path."""
        if path not in self.files():  # the manifest names a file its own revision lacks
            raise VerificationError(f"{self.label}: {path} is named by its manifest but is not in the revision")
        dest = self.store.cache_folder("verified", self.commit) / path
        damaged = None
        if dest.exists() or dest.is_symlink():
            problem, checked = file_problem(dest, info, content=False)  # its content was checked before its rename
            if checked is not None:
                return checked
            damaged = f"the cached copy {dest} {problem}"
            dest.unlink(missing_ok=True)
        problem = None
        for fresh in (False, True):
            problem, checked = self._download(path, info, dest, fresh or damaged is not None)
            if checked is not None:
                if damaged or fresh:
                    from ..console import err

                    err(f"warning: {damaged or f'a cached copy of {path} was damaged ({problem})'}; the cache was "
                        f"at fault, not {self.label}: fetched {path} again and it checks out")
                return checked
            if damaged:
                break  # fetched fresh already: the store's own bytes are wrong
        raise VerificationError(f"{self.label}: {path} {problem} (the store's bytes and manifest disagree"
                                + (f"; {damaged}, and a fresh copy fails too)" if damaged else ")"))

    def _download(self, path: str, info: FileRecord, dest: Path, fresh: bool) -> tuple[str | None, Checked | None]:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            self.store.fetch(path, self.commit, tmp, fresh=fresh)
            problem, checked = file_problem(tmp, info)
            if checked is None:
                return problem, None
            os.replace(tmp, dest)
            return None, Checked(dest, checked.bytes, checked.sha256, checked.content)
        finally:
            tmp.unlink(missing_ok=True)


def open_source(text: str | Path | Location, revision: str | None = None) -> Source:
    """The version `text` names (see `locate`), ready to read."""
    loc = text if isinstance(text, Location) else locate(text, revision)
    if loc.kind == "run":
        return RunSource(loc.target)
    try:
        store = open_location(loc)
    except StoreError as exc:
        if loc.kind == "hub" and not str(text).startswith("hf://"):
            raise ConfigError(f"{str(text)!r}: there is no local path of that name, and on the Hub: {exc}") from None
        if loc.kind == "git" and Path(loc.target).is_dir():  # a version may be a run directory too: say both
            raise StoreError(f"{Path(loc.target).resolve()} is neither a run directory nor a scalequest store "
                             "(a bare git repository)") from None
        raise
    return StoreSource(store, loc.revision or store.branch)
