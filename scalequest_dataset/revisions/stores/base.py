"""Versioned stores with the Hub's model (commits, branches, tags) behind one interface.

Both stores hold the same layout: README.md (the card, with YAML `configs:`), data/<stage>/*.parquet,
manifests/<stage>.json. A commit is all-or-nothing and names its parent: a stale parent is refused."""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


class RepoLayout:
    """The one place a store's repository layout is spelled (the Hub's own: a card with YAML `configs:`, Parquet
    under data/, our manifests and attestations). A run directory keeps data/ and manifests/ the same way, so a
    stage publishes without renaming a file."""

    CARD = "README.md"
    DATA = "data"
    MANIFESTS = "manifests"
    ATTESTATIONS = "attestations"
    IMAGES = "images"  # the card's figures (cardfigures)

    @classmethod
    def data(cls, stage: str, file: str) -> str:
        return f"{cls.DATA}/{stage}/{file}"

    @classmethod
    def data_folder(cls, stage: str) -> str:
        return f"{cls.DATA}/{stage}/"

    @classmethod
    def split_pattern(cls, stage: str, split: str) -> str:
        return f"{cls.DATA}/{stage}/{split}-*.parquet"

    @classmethod
    def manifest(cls, stage: str) -> str:
        return f"{cls.MANIFESTS}/{stage}.json"

    @classmethod
    def attestation(cls, stage: str, name: str) -> str:
        return f"{cls.ATTESTATIONS}/{stage}/{name}"


# A manifest of the paper's 1M rows is a few MB; nothing a revision holds as JSON or YAML comes near this.
MAX_RECORD_BYTES = 64 << 20


def too_big(size: int, source: str) -> None:
    """A manifest, card or attestation over the cap is refused before it is read (a 137 MB manifest took 1.4 GB)."""
    if size > MAX_RECORD_BYTES:
        raise VerificationError(f"{source} is {size:,} bytes, over the {MAX_RECORD_BYTES >> 20} MiB a record may "
                                "have: not read (a manifest of a million rows is a few MB)")


class StoreError(RuntimeError):
    """A store problem phrased for the user (names the store, revision or file)."""


class StaleParentError(StoreError):
    """The branch moved since we read it: someone else committed in between."""


class PartialPublish(StoreError):
    """A version left half published: some stages are in the store, the rest not; the message says which, and
    that the same command completes it (stages already there make no new commit)."""


class RevisionNotFound(StoreError):
    pass


class VerificationError(StoreError):
    """Bytes that do not match the record that names them (a run's shard before publishing, a fetched file)."""


@dataclass(frozen=True)
class Digest:
    """What a store knows of a file's content: a git blob id for regular files, or the sha256 of an LFS one."""

    kind: str  # "git-sha1" | "sha256"
    value: str

    def matches(self, data_path: Path | None = None, data: bytes | None = None) -> bool:
        blob = data if data is not None else Path(data_path).read_bytes()  # type: ignore[arg-type]
        if self.kind == "sha256":
            return hashlib.sha256(blob).hexdigest() == self.value
        return git_blob_sha1(blob) == self.value


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class TransferReport(Protocol):
    """Where stores report the bytes and files they move (the CLI draws a progress bar from it)."""

    def expect(self, nbytes: int, files: int) -> None: ...

    def advance(self, nbytes: int, files: int = 1) -> None: ...


# Set by whoever wants progress (the CLI) around a call; stores, however deep in a diff, a load or a publish they
# are opened, report here without every signature in between carrying a callback.
_transfers: ContextVar[TransferReport | None] = ContextVar("scalequest_transfers", default=None)


@contextmanager
def reporting_transfers(report: TransferReport | None) -> Iterator[None]:
    token = _transfers.set(report)
    try:
        yield
    finally:
        _transfers.reset(token)


def expect_transfer(nbytes: int, files: int) -> None:
    if (report := _transfers.get()) is not None:
        report.expect(nbytes, files)


def transferred(nbytes: int, files: int = 1) -> None:
    """`nbytes` in `files` files were read, written or checked."""
    if (report := _transfers.get()) is not None:
        report.advance(nbytes, files)


def content_size(content: Path | bytes) -> int:
    return len(content) if isinstance(content, bytes) else Path(content).stat().st_size


@dataclass(frozen=True)
class CommitInfo:
    id: str
    title: str
    date: str


class Store(ABC):
    """A dataset repository. Revisions are branch names, tag names or commit ids."""

    branch = "main"

    @classmethod
    def open(cls, target: str, create: bool = False) -> Store:
        """The store at `target` as the registry hands it over (a path, or a URL of this kind)."""
        return cls(target, create=create)  # type: ignore[call-arg]

    @property
    @abstractmethod
    def location(self) -> str: ...

    @abstractmethod
    def head(self) -> str | None:
        """The branch's commit, or None for an empty repository."""

    @abstractmethod
    def resolve(self, revision: str) -> str:
        """A revision's commit id; RevisionNotFound names the revision and what exists."""

    @abstractmethod
    def files(self, revision: str) -> dict[str, Digest]:
        """Every file at a revision, with its digest."""

    @abstractmethod
    def read(self, path: str, revision: str) -> bytes:
        """A small file (a manifest, the card, an attestation): over the record size cap is a VerificationError,
        a damaged object too; FileNotFoundError names a missing one."""

    @abstractmethod
    def commit(self, add: dict[str, Path | bytes], delete: list[str], message: str, parent: str | None) -> str:
        """One atomic commit on the branch, refused (StaleParentError) if the branch is no longer at `parent`."""

    @abstractmethod
    def tags(self) -> dict[str, str]:
        """tag -> commit id"""

    @abstractmethod
    def create_tag(self, tag: str, commit: str, message: str) -> None:
        """Create-only: an existing tag is an error (StoreError)."""

    @abstractmethod
    def move_tag(self, tag: str, commit: str, old: str) -> None:
        """Point an existing tag at `commit`, only if it still points at `old` (StoreError otherwise)."""

    @abstractmethod
    def delete_tag(self, tag: str) -> None: ...

    @abstractmethod
    def commits(self, revision: str | None = None) -> list[CommitInfo]:
        """Newest first."""

    @abstractmethod
    def fetch(self, path: str, revision: str, dest: Path, fresh: bool = False) -> Path:
        """One file at a revision, streamed to `dest` (a file path); FileNotFoundError names it. `fresh`: not from a
        cache of the store's own (where it keeps one): the copy before failed its check."""

    def cache_folder(self, kind: str, commit: str) -> Path:
        """Where this store's files at `commit` are cached (`kind`: "stores" for whole revisions, "shards" for
        single files); a commit id never changes content, so nothing there goes stale."""
        from ...recipe.models import cache_dir

        return cache_dir() / kind / hashlib.sha256(self.location.encode()).hexdigest()[:16] / commit


@contextmanager
def writing_atomically(dest: Path) -> Iterator[BinaryIO]:
    """Write `dest` through a uniquely named temporary sibling renamed into place, so an interrupted fetch never
    leaves a partial file that a cache would take for complete, and two processes fetching the same file never
    write into each other's temporary file."""
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
