"""The Hugging Face Hub as a store, through `huggingface_hub.HfApi` (token from HF_TOKEN or `hf auth login`).

One stage = one `create_commit` with the explicit file list and `parent_commit` (not upload_folder, which
may split into several commits); the Hub answers 412 when the parent is stale."""

from __future__ import annotations

from pathlib import Path

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


class HubStore(Store):
    def __init__(self, repo_id: str, create: bool = False, token: str | None = None) -> None:
        import httpx
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError

        self.repo_id = repo_id
        self.api = HfApi(token=token)
        try:
            self.api.repo_info(repo_id, repo_type="dataset")
        except RepositoryNotFoundError:
            if not create:
                raise StoreError(f"dataset repository {repo_id!r} not found on {self.api.endpoint}") from None
            self._require_token()
            self.api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
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
        refs = self.api.list_repo_refs(self.repo_id, repo_type="dataset")
        return next((b.target_commit for b in refs.branches if b.name == self.branch), None)

    def resolve(self, revision: str) -> str:
        from huggingface_hub.errors import RevisionNotFoundError

        try:
            return self.api.repo_info(self.repo_id, repo_type="dataset", revision=revision).sha
        except RevisionNotFoundError:
            raise RevisionNotFound(f"revision {revision!r} not found in {self.location} "
                                   f"(tags: {', '.join(sorted(self.tags())) or 'none'})") from None

    def files(self, revision: str) -> dict[str, Digest]:
        """Every file at a revision, each name passing the path check (UnsafeRevision naming it otherwise)."""
        from huggingface_hub.hf_api import RepoFile

        from ..verify import check_path

        entries = self.api.list_repo_tree(self.repo_id, repo_type="dataset", revision=self.resolve(revision),
                                          recursive=True)
        out = {}
        for entry in entries:
            if isinstance(entry, RepoFile):
                check_path(entry.path, None, f"{self.location}@{revision}")
                lfs = entry.lfs
                out[entry.path] = Digest("sha256", lfs.sha256) if lfs else Digest("git-sha1", entry.blob_id)
        return out

    def _cached_file(self, path: str, revision: str, fresh: bool = False) -> Path:
        """The file from huggingface_hub's own cache (downloaded there first if needed, or again if `fresh`)."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return Path(hf_hub_download(self.repo_id, path, repo_type="dataset", revision=self.resolve(revision),
                                        token=self.api.token, force_download=fresh))
        except EntryNotFoundError:
            raise FileNotFoundError(f"{path} not found at revision {revision!r} of {self.location}") from None

    def read(self, path: str, revision: str) -> bytes:
        local = self._cached_file(path, revision)
        too_big(local.stat().st_size, f"{self.location}@{revision} {path}")
        return local.read_bytes()

    def commit(self, add: dict[str, Path | bytes], delete: list[str], message: str, parent: str | None) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete
        from huggingface_hub.errors import HfHubHTTPError

        self._require_token()
        ops = [CommitOperationDelete(path_in_repo=p) for p in delete]
        ops += [CommitOperationAdd(path_in_repo=p, path_or_fileobj=c if isinstance(c, bytes) else str(c))
                for p, c in sorted(add.items())]
        size = sum(content_size(c) for c in add.values())
        expect_transfer(size, len(add))
        try:
            info = self.api.create_commit(self.repo_id, operations=ops, commit_message=message,
                                          repo_type="dataset", parent_commit=parent, revision=self.branch)
        except HfHubHTTPError as exc:
            status = getattr(exc.response, "status_code", None)
            if status == 412:
                raise StaleParentError(f"{self.location}: branch {self.branch!r} moved since it was read "
                                       f"(expected {parent})") from None
            raise
        transferred(size, len(add))
        return info.oid

    def tags(self) -> dict[str, str]:
        refs = self.api.list_repo_refs(self.repo_id, repo_type="dataset")
        return {t.name: t.target_commit for t in refs.tags}

    def create_tag(self, tag: str, commit: str, message: str) -> None:
        from huggingface_hub.errors import HfHubHTTPError

        self._require_token()
        try:
            self.api.create_tag(self.repo_id, tag=tag, revision=commit, tag_message=message, repo_type="dataset")
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
        self.api.delete_tag(self.repo_id, tag=tag, repo_type="dataset")

    def commits(self, revision: str | None = None) -> list[CommitInfo]:
        rev = revision or self.branch
        if self.head() is None:
            return []
        return [CommitInfo(c.commit_id, c.title, c.created_at.isoformat())
                for c in self.api.list_repo_commits(self.repo_id, repo_type="dataset", revision=rev)]

    def fetch(self, path: str, revision: str, dest: Path, fresh: bool = False) -> Path:
        import shutil

        with self._cached_file(path, revision, fresh).open("rb") as src, writing_atomically(dest) as fh:
            shutil.copyfileobj(src, fh)
        transferred(dest.stat().st_size)
        return dest


STORE = HubStore
