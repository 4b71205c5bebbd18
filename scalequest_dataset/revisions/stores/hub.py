"""The Hugging Face Hub as a store, through `huggingface_hub.HfApi` (token from HF_TOKEN or `hf auth login`).

Requests per revision are O(1), plus one per file moved (the Hub allows ~1,000 per 5 minutes):
- a revision's files are listed once (`list_repo_tree`: sizes, and the sha256 of LFS files); a revision name
  resolves once to its commit, and a commit id is never asked about again;
- a file is one streamed GET of `resolve/COMMIT/PATH` (no metadata request first: `Source.file` checks the bytes);
- one stage = one `create_commit` with the explicit file list and `parent_commit` (the Hub answers 412 when the
  parent is stale), after its LFS files were preuploaded in batches (`preupload_lfs_files`, `PREUPLOAD_BATCH`);
- 429 and 5xx answers are retried with backoff, waiting what `Retry-After` says (`_retrying`; downloads and
  uploads through huggingface_hub's own `http_backoff`, which does the same)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .base import (
    MAX_RECORD_BYTES as MAX_RECORD,
)
from .base import (
    CommitInfo,
    Digest,
    RevisionNotFound,
    StaleParentError,
    Store,
    StoreError,
    content_size,
    expect_transfer,
    too_big,
    transferred,
    writing_atomically,
)

T = TypeVar("T")
RETRY_STATUS = (429, 500, 502, 503, 504)
RETRIES = 6
PREUPLOAD_BATCH = 512  # LFS files per preupload call: progress and memory in steps, one commit at the end
_COMMIT_ID = re.compile(r"^[0-9a-f]{40}$")


def _retry_wait(exc: Exception, attempt: int) -> float | None:
    """Seconds to wait before retrying `exc` (the server's Retry-After if it gave one, else exponential backoff
    with jitter), or None: not a rate limit or server error, or out of attempts."""
    import random

    response = getattr(exc, "response", None)
    if getattr(response, "status_code", None) not in RETRY_STATUS or attempt >= RETRIES:
        return None
    after = (response.headers.get("retry-after") or "").strip()  # type: ignore[union-attr]
    if after.isdigit():
        return float(after)
    return random.SystemRandom().uniform(0, min(30.0, 0.5 * 2 ** attempt))


def _retrying(call: Callable[[], T]) -> T:
    """`call()`, again after a 429 or 5xx answer: up to RETRIES times, waiting as `_retry_wait` says."""
    from huggingface_hub.errors import HfHubHTTPError

    attempt = 0
    while True:
        try:
            return call()
        except HfHubHTTPError as exc:
            wait = _retry_wait(exc, attempt)
            if wait is None:
                raise
            time.sleep(wait)
            attempt += 1


class HubStore(Store):
    def __init__(self, repo_id: str, create: bool = False, token: str | None = None) -> None:
        import httpx
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError

        self.repo_id = repo_id
        self.api = HfApi(token=token)
        self._resolved: dict[str, str] = {}  # commit id -> itself, once the Hub said it exists
        self._trees: dict[str, dict[str, tuple[Digest, int]]] = {}  # commit id -> path -> (digest, size)
        try:
            _retrying(lambda: self.api.repo_info(repo_id, repo_type="dataset"))
        except RepositoryNotFoundError:
            if not create:
                raise StoreError(f"dataset repository {repo_id!r} not found on {self.api.endpoint}") from None
            self._require_token()
            _retrying(lambda: self.api.create_repo(repo_id, repo_type="dataset", exist_ok=True))
        except (OSError, httpx.TransportError) as exc:  # unreachable, timed out, or HF_HUB_OFFLINE
            raise StoreError(f"the Hub at {self.api.endpoint} is unreachable ({type(exc).__name__}): "
                             f"cannot open dataset {repo_id!r}") from None

    @classmethod
    def open(cls, target: str, create: bool = False) -> HubStore:
        prefix = "hf://datasets/"
        if not target.startswith(prefix) or target.count("/") != 4 or not all(target[len(prefix):].split("/")):
            raise StoreError(f"Hub targets look like hf://datasets/ORG/NAME, got {target!r}")
        return cls(target.removeprefix(prefix), create=create)

    def _require_token(self) -> None:
        from huggingface_hub import get_token

        if not (self.api.token or get_token()):
            raise StoreError("publishing to the Hub needs a token: set HF_TOKEN or run `hf auth login`")

    @property
    def location(self) -> str:
        return f"hf://datasets/{self.repo_id}"

    def head(self) -> str | None:
        refs = _retrying(lambda: self.api.list_repo_refs(self.repo_id, repo_type="dataset"))
        return next((b.target_commit for b in refs.branches if b.name == self.branch), None)

    def resolve(self, revision: str) -> str:
        """One request per revision name; a commit id, once known, never again (its content never changes)."""
        from huggingface_hub.errors import RevisionNotFoundError

        if revision in self._resolved:
            return self._resolved[revision]
        try:
            sha = _retrying(lambda: self.api.repo_info(self.repo_id, repo_type="dataset", revision=revision).sha)
        except RevisionNotFoundError:
            raise RevisionNotFound(f"revision {revision!r} not found in {self.location} "
                                   f"(tags: {', '.join(sorted(self.tags())) or 'none'})") from None
        self._resolved[sha] = sha
        if _COMMIT_ID.match(revision):
            self._resolved[revision] = sha
        return sha

    def files(self, revision: str) -> dict[str, Digest]:
        """Every file at a revision, each name passing the path check (UnsafeRevision naming it otherwise)."""
        return {path: digest for path, (digest, _) in self._tree(revision).items()}

    def _tree(self, revision: str) -> dict[str, tuple[Digest, int]]:
        """The revision's files with digest and size, from ONE recursive tree listing per commit."""
        from huggingface_hub.hf_api import RepoFile

        from ..verify import check_path

        commit = self.resolve(revision)
        if commit not in self._trees:
            entries = _retrying(lambda: list(self.api.list_repo_tree(self.repo_id, repo_type="dataset",
                                                                     revision=commit, recursive=True)))
            out = {}
            for entry in entries:
                if isinstance(entry, RepoFile):
                    check_path(entry.path, None, f"{self.location}@{revision}")
                    lfs = entry.lfs
                    digest = Digest("sha256", lfs.sha256) if lfs else Digest("git-sha1", entry.blob_id)
                    out[entry.path] = (digest, entry.size)
            self._trees[commit] = out
        return self._trees[commit]

    def _download(self, path: str, revision: str, dest: Path, cap: int | None = None) -> Path:
        """One streamed GET of the file at the commit into `dest` (atomically), with huggingface_hub's retries
        (429/5xx, Retry-After); over `cap` bytes is refused before or while reading."""
        from huggingface_hub import hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status, http_stream_backoff

        commit = self.resolve(revision)
        url = hf_hub_url(self.repo_id, path, repo_type="dataset", revision=commit, endpoint=self.api.endpoint)
        where = f"{self.location}@{revision} {path}"
        try:
            with http_stream_backoff("GET", url, headers=build_hf_headers(token=self.api.token),
                                     follow_redirects=True) as response:
                hf_raise_for_status(response)
                if cap is not None and response.headers.get("content-length", "").isdigit():
                    too_big(int(response.headers["content-length"]), where)
                with writing_atomically(dest) as fh:
                    got = 0
                    for chunk in response.iter_bytes(1 << 20):
                        got += len(chunk)
                        if cap is not None:
                            too_big(got, where)
                        fh.write(chunk)
        except EntryNotFoundError:
            raise FileNotFoundError(f"{path} not found at revision {revision!r} of {self.location}") from None
        return dest

    def read(self, path: str, revision: str) -> bytes:
        import tempfile

        known = self._trees.get(self.resolve(revision), {}).get(path)
        if known is not None:
            too_big(known[1], f"{self.location}@{revision} {path}")  # refused before a byte is fetched
        with tempfile.TemporaryDirectory() as tmp:
            return self._download(path, revision, Path(tmp) / "file", cap=MAX_RECORD).read_bytes()

    def commit(self, add: dict[str, Path | bytes], delete: list[str], message: str, parent: str | None) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete
        from huggingface_hub.errors import HfHubHTTPError

        self._require_token()
        additions = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=c if isinstance(c, bytes) else str(c))
                     for p, c in sorted(add.items())]
        ops = [CommitOperationDelete(path_in_repo=p) for p in sorted(set(delete) - set(add))] + additions
        size = sum(content_size(c) for c in add.values())
        expect_transfer(size, len(add))
        for start in range(0, len(additions), PREUPLOAD_BATCH):  # LFS bytes up first, in batches; then ONE commit
            batch = additions[start:start + PREUPLOAD_BATCH]
            _retrying(lambda batch=batch: self.api.preupload_lfs_files(  # type: ignore[misc]
                self.repo_id, additions=batch, repo_type="dataset", revision=self.branch, free_memory=False))
            transferred(sum(op.upload_info.size for op in batch), len(batch))
        try:
            info = _retrying(lambda: self.api.create_commit(
                self.repo_id, operations=ops, commit_message=message, repo_type="dataset", parent_commit=parent,
                revision=self.branch))
        except HfHubHTTPError as exc:
            status = getattr(exc.response, "status_code", None)
            if status == 412:
                raise StaleParentError(f"{self.location}: branch {self.branch!r} moved since it was read "
                                       f"(expected {parent})") from None
            raise
        return info.oid

    def tags(self) -> dict[str, str]:
        refs = _retrying(lambda: self.api.list_repo_refs(self.repo_id, repo_type="dataset"))
        return {t.name: t.target_commit for t in refs.tags}

    def create_tag(self, tag: str, commit: str, message: str) -> None:
        from huggingface_hub.errors import HfHubHTTPError

        self._require_token()
        try:
            _retrying(lambda: self.api.create_tag(self.repo_id, tag=tag, revision=commit, tag_message=message,
                                                  repo_type="dataset"))
        except HfHubHTTPError as exc:
            if getattr(exc.response, "status_code", None) == 409:
                raise StoreError(f"tag {tag!r} already exists in {self.location}") from None
            raise

    def move_tag(self, tag: str, commit: str, old: str) -> None:
        """The Hub has no compare-and-swap for tags: check, delete, create, then check that it landed."""
        if self.tags().get(tag) != old:
            raise StoreError(f"tag {tag!r} in {self.location} no longer points at {old[:12]}; nothing was changed")
        self.delete_tag(tag)
        self.create_tag(tag, commit, f"moved from {old[:12]}")
        now = self.tags().get(tag)
        if now != commit:
            raise StoreError(f"tag {tag!r} in {self.location} points at {now} after the move, not {commit}")

    def delete_tag(self, tag: str) -> None:
        self._require_token()
        _retrying(lambda: self.api.delete_tag(self.repo_id, tag=tag, repo_type="dataset"))

    def commits(self, revision: str | None = None) -> list[CommitInfo]:
        rev = revision or self.branch
        if self.head() is None:
            return []
        return [CommitInfo(c.commit_id, c.title, c.created_at.isoformat())
                for c in _retrying(lambda: self.api.list_repo_commits(self.repo_id, repo_type="dataset", revision=rev))]

    def fetch(self, path: str, revision: str, dest: Path, fresh: bool = False) -> Path:
        """Straight from the Hub (no cache of its own here: `fresh` changes nothing); `Source.file` checks it."""
        self._download(path, revision, dest)
        transferred(dest.stat().st_size)
        return dest


STORE = HubStore
