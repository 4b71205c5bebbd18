"""A local store: a bare git repository on disk (git is the Hub's own format; `git clone PATH` browses it).

Commits are built with plumbing into a private index and published by `git update-ref NEW OLD`, an
atomic compare-and-swap: a half-written commit is never on the branch, and a stale parent is refused."""

from __future__ import annotations

import os
import subprocess
import tarfile
import tempfile
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
    transferred,
    writing_atomically,
)

ZERO = "0" * 40
_IDENTITY = {"GIT_AUTHOR_NAME": "scalequest", "GIT_AUTHOR_EMAIL": "scalequest@localhost",
             "GIT_COMMITTER_NAME": "scalequest", "GIT_COMMITTER_EMAIL": "scalequest@localhost"}


def is_git_store(path: Path) -> bool:
    """A bare git repository: what `scalequest publish --to PATH` creates."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


class LocalGitStore(Store):
    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = Path(path).expanduser().resolve()
        if not is_git_store(self.path):
            if not create:
                raise StoreError(f"{self.path} is not a scalequest store (a bare git repository); "
                                 "`scalequest publish RUN --to PATH` creates one")
            if self.path.exists() and any(self.path.iterdir()):
                raise StoreError(f"{self.path} exists and is not an empty directory or a git store")
            self.path.mkdir(parents=True, exist_ok=True)
            self._git("init", "--bare", "-q", "-b", self.branch)

    @property
    def location(self) -> str:
        return str(self.path)

    def _git(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
        full_env = {**os.environ, **_IDENTITY, **(env or {})}
        res = subprocess.run(["git", "--git-dir", str(self.path), *args], input=input, capture_output=True,
                             env=full_env)
        if check and res.returncode != 0:
            raise StoreError(f"git {' '.join(args[:2])} failed in {self.path}: {res.stderr.decode().strip()}")
        return res

    def head(self) -> str | None:
        res = self._git("rev-parse", "--verify", "-q", f"refs/heads/{self.branch}^{{commit}}", check=False)
        return res.stdout.decode().strip() or None

    def resolve(self, revision: str) -> str:
        res = self._git("rev-parse", "--verify", "-q", f"{revision}^{{commit}}", check=False)
        if res.returncode != 0:
            raise RevisionNotFound(f"revision {revision!r} not found in {self.path} "
                                   f"(tags: {', '.join(sorted(self.tags())) or 'none'})")
        return res.stdout.decode().strip()

    def files(self, revision: str) -> dict[str, Digest]:
        out = self._git("ls-tree", "-r", "-z", self.resolve(revision)).stdout.decode()
        entries = {}
        for item in filter(None, out.split("\0")):
            meta, path = item.split("\t", 1)
            entries[path] = Digest("git-sha1", meta.split()[2])
        return entries

    def _sizes(self, commit: str) -> dict[str, int]:
        """Every file's size at a commit (for progress), from the tree alone."""
        out = self._git("ls-tree", "-r", "-l", "-z", commit).stdout.decode()
        sizes = {}
        for item in filter(None, out.split("\0")):
            meta, path = item.split("\t", 1)
            size = meta.split()[3]
            sizes[path] = int(size) if size.isdigit() else 0
        return sizes

    def read(self, path: str, revision: str) -> bytes:
        res = self._git("cat-file", "blob", f"{self.resolve(revision)}:{path}", check=False)
        if res.returncode != 0:
            raise FileNotFoundError(f"{path} not found at revision {revision!r} of {self.path}")
        return res.stdout

    def commit(self, add: dict[str, Path | bytes], delete: list[str], message: str, parent: str | None) -> str:
        expect_transfer(sum(content_size(c) for c in add.values()), len(add))
        with tempfile.TemporaryDirectory() as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            if parent:
                self._git("read-tree", parent, env=env)
            for path in delete:
                self._git("update-index", "--force-remove", "--", path, env=env)
            for path, content in sorted(add.items()):
                if isinstance(content, bytes):
                    blob = self._git("hash-object", "-w", "--stdin", input=content).stdout.decode().strip()
                else:
                    blob = self._git("hash-object", "-w", "--", str(content)).stdout.decode().strip()
                self._git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
                transferred(content_size(content))
            tree = self._git("write-tree", env=env).stdout.decode().strip()
        args = ["commit-tree", tree, "-m", message] + (["-p", parent] if parent else [])
        commit = self._git(*args).stdout.decode().strip()
        res = self._git("update-ref", f"refs/heads/{self.branch}", commit, parent or ZERO, check=False)
        if res.returncode != 0:
            raise StaleParentError(f"{self.path}: branch {self.branch!r} moved since it was read "
                                   f"(expected {parent or 'no commit'}, now {self.head()})")
        return commit

    def tags(self) -> dict[str, str]:
        out = self._git("for-each-ref", "--format=%(refname:short) %(objectname)", "refs/tags").stdout.decode()
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def create_tag(self, tag: str, commit: str, message: str) -> None:
        res = self._git("update-ref", f"refs/tags/{tag}", commit, ZERO, check=False)  # create-only
        if res.returncode != 0:
            raise StoreError(f"tag {tag!r} already exists in {self.path}")

    def move_tag(self, tag: str, commit: str, old: str) -> None:
        res = self._git("update-ref", f"refs/tags/{tag}", commit, old, check=False)  # compare-and-swap
        if res.returncode != 0:
            raise StoreError(f"tag {tag!r} in {self.path} no longer points at {old[:12]} (moved by someone else?); "
                             "nothing was changed")

    def delete_tag(self, tag: str) -> None:
        self._git("update-ref", "-d", f"refs/tags/{tag}")

    def commits(self, revision: str | None = None) -> list[CommitInfo]:
        rev = revision or self.head()
        if rev is None:
            return []
        out = self._git("log", "--format=%H%x1f%s%x1f%aI", self.resolve(rev)).stdout.decode()
        return [CommitInfo(*line.split("\x1f")) for line in out.splitlines() if line]

    def fetch(self, path: str, revision: str, dest: Path) -> Path:
        spec = f"{self.resolve(revision)}:{path}"
        if self._git("cat-file", "-e", spec, check=False).returncode != 0:
            raise FileNotFoundError(f"{path} not found at revision {revision!r} of {self.path}")
        with writing_atomically(dest) as fh:
            subprocess.run(["git", "--git-dir", str(self.path), "cat-file", "blob", spec], stdout=fh, check=True)
        transferred(dest.stat().st_size)
        return dest

    def download(self, revision: str, prefixes: list[str], dest: Path) -> Path:
        commit = self.resolve(revision)
        have = self.files(commit)
        wanted = [p for p in prefixes if any(f == p or f.startswith(p.rstrip("/") + "/") for f in have)]
        dest.mkdir(parents=True, exist_ok=True)
        # Streamed: a stage can be gigabytes, so never hold the archive in memory.
        proc = subprocess.Popen(["git", "--git-dir", str(self.path), "archive", "--format=tar", commit, "--", *wanted],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        sizes = [size for path, size in self._sizes(commit).items()
                 if any(path == p or path.startswith(p.rstrip("/") + "/") for p in wanted)]
        expect_transfer(sum(sizes), len(sizes))
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for member in tar:  # one at a time, in stream order: progress per file
                tar.extract(member, dest, filter="data")
                if member.isfile():
                    transferred(member.size)
        if proc.wait() != 0:
            raise StoreError(f"git archive failed in {self.path}: {proc.stderr.read().decode().strip()}")
        return dest
