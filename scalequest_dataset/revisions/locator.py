"""Where a version of the dataset lives, for diff and regenerate: a run directory, a local store at a
revision (`PATH@REV`) or a Hub repo at a revision (`ORG/NAME@REV`, or `hf://datasets/ORG/NAME@REV`).

Manifests are read eagerly (small) and validated strictly: a revision from someone else is untrusted input.
Shards are fetched only when asked for, cached by commit id under unique temporary names, and every file is
checked against its manifest's sha256 before use: a store whose bytes and manifest disagree is reported
(VerificationError), never compared as if it were data."""

from __future__ import annotations

from pathlib import Path

from ..recipe.params import ConfigError
from ..run import RunLayout
from ..run import records as rec
from ..run.records import FileRecord, Manifest
from ..stages import STAGE_ORDER
from .stores import RepoLayout, StoreError, VerificationError


class Source:
    label: str

    def manifests(self) -> dict[str, Manifest]:
        raise NotImplementedError

    def _path(self, stage: str, info: FileRecord) -> Path:
        raise NotImplementedError

    def shard_path(self, stage: str, info: FileRecord) -> Path:
        """A local copy of one file of `stage`, checked against its record (size and sha256)."""
        from ..files import file_problem

        path = self._path(stage, info)
        problem = file_problem(path, info.sha256)
        if problem:
            raise VerificationError(f"{self.label}: data/{stage}/{info.file} {problem.replace('its record', 'its manifest')}"
                                    " (the store's bytes and manifest disagree)")
        return path


class RunSource(Source):
    def __init__(self, root: Path) -> None:
        self.layout = RunLayout(root)
        self.label = str(root)
        self._manifests: dict[str, Manifest] | None = None

    def manifests(self) -> dict[str, Manifest]:
        if self._manifests is None:
            self._manifests = {s: rec.read(Manifest, self.layout.manifest(s))
                               for s in self.layout.complete_stages(STAGE_ORDER)}
        return self._manifests

    def _path(self, stage: str, info: FileRecord) -> Path:
        return self.layout.data_dir(stage) / info.file


class StoreSource(Source):
    def __init__(self, store, revision: str) -> None:
        self.store = store
        self.revision = revision
        self.commit = store.resolve(revision)
        self.label = f"{store.location}@{revision}"
        self._manifests: dict[str, Manifest] | None = None

    def manifests(self) -> dict[str, Manifest]:
        if self._manifests is None:
            files = self.store.files(self.commit)
            self._manifests = {
                s: rec.parse(Manifest, self.store.read(RepoLayout.manifest(s), self.commit),
                             f"{self.label} {RepoLayout.manifest(s)}")
                for s in STAGE_ORDER if RepoLayout.manifest(s) in files}
        return self._manifests

    def at(self, commit: str) -> StoreSource:
        """The same store at another commit (where a manifest says its input was published)."""
        return StoreSource(self.store, commit)

    def _path(self, stage: str, info: FileRecord) -> Path:
        dest = self.store.cache_folder("shards", self.commit) / stage / info.file
        if not dest.exists():
            self.store.fetch(RepoLayout.data(stage, info.file), self.commit, dest)
        return dest


def open_source(text: str | Path) -> Source:
    """`RUN_DIR`, `STORE_PATH@REV` (REV defaults to main), `ORG/NAME@REV` or `hf://datasets/ORG/NAME@REV`."""
    from .stores import open_store

    raw = str(text)
    location, _, revision = raw.rpartition("@") if "@" in raw else (raw, "", "")
    if location.startswith("hf://"):
        return StoreSource(open_store(location), revision or "main")
    path = Path(location).expanduser()
    if RunLayout.is_run_dir(path):
        if revision:
            raise ConfigError(f"{raw}: a run directory has no revisions (publish it to a store first)")
        return RunSource(path)
    if path.exists():
        return StoreSource(open_store(path), revision or "main")
    if _looks_local(location):
        raise ConfigError(f"{location} does not exist (not a run directory or a store); for a Hub repo write "
                          f"ORG/NAME@REV or hf://datasets/ORG/NAME@REV")
    try:
        return StoreSource(open_store(f"hf://datasets/{location}"), revision or "main")
    except StoreError as exc:
        raise ConfigError(f"{raw!r}: there is no local path {location!r}, and on the Hub: {exc}") from None


def _looks_local(location: str) -> bool:
    """A path, not a Hub repo id: absolute or relative-explicit, more than ORG/NAME, or its first folder exists."""
    parts = location.split("/")
    return (location.startswith((".", "/", "~")) or len(parts) != 2 or not all(parts)
            or Path(parts[0]).expanduser().is_dir())
