"""A local store: a bare git repository on disk (git is the Hub's own format; `git clone PATH` browses it).

Commits are built with plumbing into a private index and published by `git update-ref NEW OLD`, an
atomic compare-and-swap: a half-written commit is never on the branch, and a stale parent is refused."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
import weakref
from pathlib import Path
from typing import BinaryIO

from .base import (
    MAX_RECORD_BYTES,
    CommitInfo,
    Digest,
    RevisionNotFound,
    StaleParentError,
    Store,
    StoreError,
    VerificationError,
    content_size,
    expect_transfer,
    too_big,
    transferred,
    writing_atomically,
)

REGULAR = ("100644", "100755")  # blob modes of regular files; 120000 (symlink) and 160000 (submodule) are refused

ZERO = "0" * 40
_IDENTITY = {"GIT_AUTHOR_NAME": "scalequest", "GIT_AUTHOR_EMAIL": "scalequest@localhost",
             "GIT_COMMITTER_NAME": "scalequest", "GIT_COMMITTER_EMAIL": "scalequest@localhost"}


# Parquet shards are zstd-compressed already: zlib over them costs CPU for ~nothing (BENCHMARKS.md, stores), and
# delta search between unrelated shards likewise; every blob is stored as is, in one pack per commit.
PACK_SETTINGS = ("-c", "core.compression=0", "-c", "pack.compression=0", "-c", "core.bigFileThreshold=1")


PACK_WINDOW = "64m"  # the pack bytes `git cat-file --batch` keeps mapped (_blob)


def _quote(path: str) -> bytes:
    """A path as fast-import reads it: C-style quoted, so no name can end a command early."""
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'.encode()


def is_git_store(path: Path) -> bool:
    """A bare git repository: what `scalequest publish --to PATH` creates."""
    return (path / "HEAD").is_file() and (path / "objects").is_dir()


class LocalGitStore(Store):
    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = Path(path).expanduser().resolve()
        self._commit_ids: set[str] = set()
        self._cat: subprocess.Popen | None = None  # one `git cat-file --batch` for every file read (`_blob`)
        self._cat_lock = threading.Lock()
        if not is_git_store(self.path):
            if not create:
                raise StoreError(f"{self.path} is not a scalequest store (a bare git repository); "
                                 "`scalequest publish RUN --to PATH` creates one")
            self._create()

    def _create(self) -> None:
        """A new bare repository at `path`, made under a temporary sibling name and renamed into place (a rename onto
        a missing or empty folder is atomic), so two publishers creating one store at once both end up using it."""
        if self.path.exists() and any(self.path.iterdir()):
            raise StoreError(f"{self.path} exists and is not an empty directory or a git store")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        try:
            subprocess.run(["git", "init", "--bare", "-q", "-b", self.branch, str(tmp)], check=True,
                           capture_output=True)
            os.rename(tmp, self.path)
        except OSError:
            if not is_git_store(self.path):  # not another publisher's store: something else is there now
                raise StoreError(f"{self.path} exists and is not an empty directory or a git store") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @property
    def location(self) -> str:
        return str(self.path)

    def _git(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess:
        full_env = {**os.environ, **_IDENTITY, **(env or {})}
        res = subprocess.run(["git", "--git-dir", str(self.path), *args], input=input, capture_output=True,
                             env=full_env)
        if check and res.returncode != 0:
            raise StoreError(f"git {' '.join(args[:2])} failed in {self.path}: {_one_line(res.stderr)}")
        return res

    def head(self) -> str | None:
        res = self._git("rev-parse", "--verify", "-q", f"refs/heads/{self.branch}^{{commit}}", check=False)
        return res.stdout.decode().strip() or None

    def resolve(self, revision: str) -> str:
        """A revision's commit; a commit id once resolved is not asked again (its content never changes)."""
        if revision in self._commit_ids:
            return revision
        if not revision or revision.startswith("-") or any(c.isspace() or c == "\0" for c in revision):
            raise RevisionNotFound(f"{revision!r} is not a revision name (a tag, branch or commit id)")
        res = self._git("rev-parse", "--verify", "-q", f"{revision}^{{commit}}", check=False)
        if res.returncode != 0:
            raise RevisionNotFound(f"revision {revision!r} not found in {self.path} "
                                   f"(tags: {', '.join(sorted(self.tags())) or 'none'})")
        commit = res.stdout.decode().strip()
        self._commit_ids.add(commit)
        return commit

    def files(self, revision: str) -> dict[str, Digest]:
        """Every file at a revision; a tree entry that is not a regular file, or whose name is unsafe (`..`, an
        absolute name, a backslash), makes the revision unsafe (UnsafeRevision naming it)."""
        from ..verify import UnsafeRevision, check_path

        commit = self.resolve(revision)
        res = self._git("ls-tree", "-r", "-z", commit, check=False)
        if res.returncode != 0:
            raise VerificationError(f"{self.path}@{revision}: corrupt revision: its tree cannot be read "
                                    f"({_one_line(res.stderr)})")
        entries = {}
        for item in filter(None, res.stdout.split(b"\0")):
            meta, raw = item.split(b"\t", 1)
            mode, _, blob = meta.decode().split()
            try:
                path = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UnsafeRevision(f"{self.path}@{revision}: unsafe revision: the path {raw!r} is not UTF-8; "
                                     "nothing was read or written") from None
            check_path(path, None, f"{self.path}@{revision}")
            if mode not in REGULAR:
                kind = {"120000": "a symlink", "160000": "a submodule"}.get(mode, f"mode {mode}")
                raise UnsafeRevision(f"{self.path}@{revision}: unsafe revision: {path} is {kind}, not a regular file; "
                                     "nothing was read or written")
            entries[path] = Digest("git-sha1", blob)
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

    def _blob(self, path: str, revision: str, out: BinaryIO, cap: int | None = None) -> bool:
        """PATH at the revision streamed into `out` through ONE long-lived `git cat-file --batch -z` (not three
        processes per file); False when that cannot say (missing, not a blob, over `cap`, a damaged object): the
        caller then asks the one-process-per-call way, whose errors name what is wrong."""
        spec = f"{self.resolve(revision)}:{path}".encode() + b"\0"
        with self._cat_lock:
            try:
                if self._cat is None or self._cat.poll() is not None:
                    # git maps packs in windows of up to 8 GiB in all: reading a whole revision's blobs kept ~800
                    # MB of a 780 MB pack resident in this one process (the 1M rehearsal); 64 MB is plenty to stream
                    self._cat = subprocess.Popen(["git", "-c", f"core.packedGitLimit={PACK_WINDOW}",
                                                  "-c", f"core.packedGitWindowSize={PACK_WINDOW}",
                                                  "--git-dir", str(self.path), "cat-file", "--batch", "-z"],
                                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                                 stderr=subprocess.DEVNULL)
                    weakref.finalize(self, _close, self._cat)
                cat = self._cat
                cat.stdin.write(spec)  # type: ignore[union-attr]
                cat.stdin.flush()  # type: ignore[union-attr]
                header = cat.stdout.readline().split()  # type: ignore[union-attr]
                if len(header) != 3:
                    return False  # "<spec> missing", or git stopped on a damaged object
                size = int(header[2])
                ok = header[1] == b"blob" and (cap is None or size <= cap)
                left = size
                while left:
                    chunk = cat.stdout.read(min(left, 1 << 20))  # type: ignore[union-attr]
                    if not chunk:
                        raise OSError("git cat-file stopped mid-object")
                    if ok:
                        out.write(chunk)
                    left -= len(chunk)
                cat.stdout.read(1)  # type: ignore[union-attr]
                return ok
            except (OSError, ValueError):
                _close(self._cat)
                self._cat = None
                return False

    def read(self, path: str, revision: str) -> bytes:
        buf = io.BytesIO()
        if self._blob(path, revision, buf, cap=MAX_RECORD_BYTES):
            return buf.getvalue()
        spec = self._object(path, revision)
        size = self._git("cat-file", "-s", spec, check=False)
        if size.returncode != 0 or not size.stdout.strip().isdigit():
            raise self._corrupt(path, revision, size.stderr)
        too_big(int(size.stdout), f"{self.path}@{revision} {path}")
        res = self._git("cat-file", "blob", spec, check=False)
        if res.returncode != 0:
            raise self._corrupt(path, revision, res.stderr)
        return res.stdout

    def _object(self, path: str, revision: str) -> str:
        """The blob id of PATH at the revision: FileNotFoundError when the revision's tree has no such file, a
        VerificationError ("corrupt git object") when it has one whose object cannot be read."""
        named = self._git("rev-parse", "--verify", "-q", f"{self.resolve(revision)}:{path}", check=False)  # trees only
        if named.returncode != 0:
            raise FileNotFoundError(f"{path} not found at revision {revision!r} of {self.path}")
        blob = named.stdout.decode().strip()
        kind = self._git("cat-file", "-t", blob, check=False)
        if kind.returncode != 0:
            raise self._corrupt(path, revision, kind.stderr)
        if kind.stdout.strip() != b"blob":
            raise FileNotFoundError(f"{path} at revision {revision!r} of {self.path} is a folder, not a file")
        return blob

    def _corrupt(self, path: str, revision: str, stderr: bytes) -> VerificationError:
        return VerificationError(f"{self.path}@{revision} {path}: corrupt git object ({_one_line(stderr)})")

    def commit(self, add: dict[str, Path | bytes], delete: list[str], message: str, parent: str | None) -> str:
        """The stage as ONE `git fast-import` stream (blobs, then the commit with its deletions and additions) into
        one new pack, written without zlib recompression (Parquet is compressed already: `PACK_SETTINGS`), under a
        private ref; then one `update-ref --stdin` transaction moves the branch (compare-and-swap on `parent`) and
        drops the private ref. Any removal or rename is a `D` line: no work tree, no index."""
        expect_transfer(sum(content_size(c) for c in add.values()), len(add))
        private = f"refs/scalequest/commit-{os.getpid()}-{uuid.uuid4().hex}"
        with tempfile.TemporaryDirectory() as tmp:
            marks = Path(tmp) / "marks"
            cmd = ["git", "--git-dir", str(self.path), *PACK_SETTINGS, "fast-import", "--quiet", "--done",
                   "--date-format=now", f"--export-marks={marks}"]
            with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  env={**os.environ, **_IDENTITY}) as proc:
                try:
                    self._stream(proc.stdin, add, delete, message, parent, private)  # type: ignore[arg-type]
                    proc.stdin.close()  # type: ignore[union-attr]
                except BrokenPipeError:
                    pass  # fast-import stopped: its stderr says why
                err = proc.stderr.read()  # type: ignore[union-attr]
            if proc.returncode != 0:
                self._git("update-ref", "-d", private, check=False)
                raise StoreError(f"git fast-import failed in {self.path}: {err.decode(errors='replace').strip()[:500]}")
            commit = dict(line.split() for line in marks.read_text().splitlines())[f":{len(add) + 1}"]
        moved = self._git("update-ref", "--stdin", check=False,
                          input=f"start\nupdate refs/heads/{self.branch} {commit} {parent or ZERO}\n"
                                f"delete {private}\nprepare\ncommit\n".encode())
        if moved.returncode != 0:
            self._git("update-ref", "-d", private, check=False)
            raise StaleParentError(f"{self.path}: branch {self.branch!r} moved since it was read "
                                   f"(expected {parent or 'no commit'}, now {self.head()})")
        self._git(*PACK_SETTINGS, "-c", "gc.autoDetach=false", "gc", "--auto", "--quiet", check=False)  # packs the packs once there are many (gc.autoPackLimit)
        return commit

    @staticmethod
    def _stream(out: BinaryIO, add: dict[str, Path | bytes], delete: list[str], message: str, parent: str | None,
                ref: str) -> None:
        """The fast-import commands: each blob with a mark (1..n), then the commit (mark n+1)."""
        names = sorted(add)
        for mark, path in enumerate(names, 1):
            content = add[path]
            out.write(b"blob\nmark :%d\ndata %d\n" % (mark, content_size(content)))
            if isinstance(content, bytes):
                out.write(content)
            else:
                with open(content, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 20)
            out.write(b"\n")
            transferred(content_size(content))
        body = message.encode()
        out.write(b"commit %s\nmark :%d\ncommitter %s <%s> now\ndata %d\n%s\n" % (
            ref.encode(), len(names) + 1, _IDENTITY["GIT_COMMITTER_NAME"].encode(),
            _IDENTITY["GIT_COMMITTER_EMAIL"].encode(), len(body), body))
        if parent:
            out.write(b"from %s\n" % parent.encode())
        for path in sorted(set(delete) - set(add)):
            out.write(b"D %s\n" % _quote(path))
        for mark, path in enumerate(names, 1):
            out.write(b"M 100644 :%d %s\n" % (mark, _quote(path)))
        out.write(b"\ndone\n")

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

    def fetch(self, path: str, revision: str, dest: Path, fresh: bool = False) -> Path:
        """Git keeps no cache: `fresh` changes nothing."""
        try:
            with writing_atomically(dest) as fh:
                if not self._blob(path, revision, fh):
                    raise _AskAgain  # nothing of it kept
            transferred(dest.stat().st_size)
            return dest
        except _AskAgain:
            pass
        spec = self._object(path, revision)
        with writing_atomically(dest) as fh:
            res = subprocess.run(["git", "--git-dir", str(self.path), "cat-file", "blob", spec], stdout=fh,
                                 stderr=subprocess.PIPE)
            if res.returncode != 0:
                raise self._corrupt(path, revision, res.stderr)
        transferred(dest.stat().st_size)
        return dest


class _AskAgain(Exception):
    """The batch reader could not say: ask git the slow way, whose errors name the problem."""


def _close(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait()


def _one_line(stderr: bytes) -> str:
    """git's complaint as one line of an error message (it writes several)."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return "; ".join(lines)[:300] or "unreadable"


STORE = LocalGitStore
