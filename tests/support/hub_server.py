"""A small Hugging Face Hub API server on 127.0.0.1, for offline tests of code that uses the real clients.

It speaks enough of the Hub's HTTP API that `huggingface_hub` (HfApi, hf_hub_download, snapshot_download,
HfFileSystem) and `datasets.load_dataset(repo_id, name, revision=...)` work against it: repos, commits
(NDJSON, with `parentCommit` -> 412 when stale), the basic LFS transfer, branches, tags, refs, history, tree,
paths-info and `resolve` downloads with Range. State lives in memory: every commit is an immutable snapshot
(path -> entry), branches and tags point at commits, blobs are stored once by sha256.

The clients read HF_ENDPOINT (and the cache location) when they are imported, so set the environment
*before* importing them: run the client code in a subprocess with `HubServer.client_env(...)`. This module
imports neither `huggingface_hub` nor `datasets`, so starting a server never freezes their settings.

    with HubServer() as hub:                       # or: hub = HubServer(); url = hub.start(); ...; hub.stop()
        env = hub.client_env(tmp_path / "hf_home")
        subprocess.run([sys.executable, "client.py"], env=env, check=True)

Any token (or none) is accepted; `HubServer.token` is a placeholder for code that insists on having one.
Not implemented: pull requests (`create_pr`), Xet, multipart LFS, private/gated access control, discussions.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import fnmatch
import hashlib
import html
import json
import os
import re
import socket
import sys
import threading
import traceback
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

DEFAULT_USER = "user"
DEFAULT_TOKEN = "hf_local_test_token"
# Files at least this large go through LFS whatever their name (the Hub's threshold is 10 MB).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
# The patterns of the .gitattributes the Hub writes in a new repo (abridged): what preupload answers "lfs" for.
DEFAULT_LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.avro", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gguf", "*.gz", "*.h5", "*.joblib",
    "*.lfs", "*.lz4", "*.mds", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot",
    "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar", "*.tflite",
    "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    "*.flac", "*.mp3", "*.ogg", "*.wav", "*.mp4", "*.webm", "*.jpg", "*.jpeg", "*.png", "*.gif", "*.webp",
)
DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS)

_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_API_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REF_NAME_RE = re.compile(r"^(?!refs/)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]{1,200}(?<![/.])$")
_HEX_PREFIX_RE = re.compile(r"^[0-9a-f]{5,40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Same YAML block the clients look for at the top of a README.md.
_YAML_BLOCK_RE = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")
_STALE_PARENT_MESSAGE = "A commit has happened since. Please refresh and try again."


# ---------------------------------------------------------------------------------------------- storage


def _git_oid(kind: bytes, content: bytes) -> str:
    return hashlib.sha1(kind + b" %d\0" % len(content) + content).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> datetime:
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _iso(date: datetime) -> str:
    return date.strftime("%Y-%m-%dT%H:%M:%S.") + f"{date.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class _Entry:
    """A file in a snapshot. `oid` is the git blob id (of the content, or of the LFS pointer)."""

    sha256: str
    size: int
    lfs: bool
    oid: str

    @classmethod
    def regular(cls, content: bytes) -> _Entry:
        return cls(hashlib.sha256(content).hexdigest(), len(content), False, _git_oid(b"blob", content))

    @classmethod
    def large(cls, sha256: str, size: int) -> _Entry:
        return cls(sha256, size, True, _git_oid(b"blob", _lfs_pointer(sha256, size)))

    @property
    def etag(self) -> str:
        # The Hub's ETag is the git oid for regular files and the sha256 for LFS files.
        return self.sha256 if self.lfs else self.oid


@dataclass(frozen=True)
class _Commit:
    oid: str
    parent: str | None
    files: Mapping[str, _Entry]
    dirs: Mapping[str, str]  # directory path ("" = root) -> git tree oid
    title: str
    message: str
    author: str
    date: datetime


def _tree_oids(files: Mapping[str, _Entry]) -> dict[str, str]:
    """Git tree ids of every directory, so that directory oids (and so lastCommit) behave like git's."""
    dirs = {""}
    for path in files:
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    entries: dict[str, list[tuple[str, bytes, str, str]]] = {d: [] for d in dirs}
    for path, entry in files.items():
        parent, _, name = path.rpartition("/")
        entries[parent].append((name, b"100644", name, entry.oid))
    oids: dict[str, str] = {}
    # Deepest directories first, the root last: a tree needs its subtrees' ids.
    for d in sorted(dirs, key=lambda d: d.count("/") if d else -1, reverse=True):
        content = b"".join(
            mode + b" " + name.encode() + b"\0" + bytes.fromhex(oid) for _, mode, name, oid in sorted(entries[d])
        )
        oids[d] = _git_oid(b"tree", content)
        if d:
            parent, _, name = d.rpartition("/")
            entries[parent].append((name + "/", b"40000", name, oids[d]))  # git sorts trees as "name/"
    return oids


def _make_commit(
    parent: _Commit | None, files: dict[str, _Entry], title: str, message: str, author: str
) -> _Commit:
    dirs = _tree_oids(files)
    date = _now()
    ident = f"{author} <{author}@users.noreply.huggingface.co> {int(date.timestamp())} +0000"
    body = f"tree {dirs['']}\n"
    body += f"parent {parent.oid}\n" if parent else ""
    body += f"author {ident}\ncommitter {ident}\n\n{title}\n" + (f"\n{message}\n" if message else "")
    oid = _git_oid(b"commit", body.encode())
    return _Commit(oid, parent.oid if parent else None, MappingProxyType(files), MappingProxyType(dirs),
                   title, message, author, date)


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs_oids: set[str] = field(default_factory=set)  # LFS objects uploaded to this repo
    gated: bool | str = False  # reported by repo info only (access is not controlled)

    @property
    def url_path(self) -> str:
        return _URL_PREFIX[self.repo_type] + self.repo_id


# ---------------------------------------------------------------------------------------------- HTTP plumbing


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Response:
    body = json.dumps(data, default=str).encode()
    return _Response(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})


class HubError(Exception):
    """An error answered to the client: status, message, and the X-Error-Code the clients map to exceptions."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.extra = status, message, code, headers or {}, extra

    def response(self) -> _Response:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return _json({"error": self.message, **self.extra}, self.status, headers)


def _repo_not_found(repo_id: str) -> HubError:
    return HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")


def _revision_not_found(revision: str) -> HubError:
    return HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HubError(400, f"Invalid JSON body: {e}") from None
    if not isinstance(data, dict):
        raise HubError(400, "The JSON body must be an object")
    return data


def _clean_path(path: Any) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or path.endswith("/"):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    if any(part in ("", ".", "..", ".git") for part in path.split("/")):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _card_data(readme: bytes | None) -> dict[str, Any] | None:
    """The README's YAML front matter as a dict (None when there is none or it does not parse)."""
    if readme is None:
        return None
    match = _YAML_BLOCK_RE.search(readme.decode("utf-8", errors="replace"))
    if not match:
        return None
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("1", "true", "yes")


# ---------------------------------------------------------------------------------------------- the Hub


class _Hub:
    """The server's state and request handling, independent of the HTTP transport."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.repos: dict[tuple[str, str], _Repo] = {}
        self.blobs: dict[str, bytes] = {}  # sha256 -> content, shared by all repos
        # One lock for all state: commits, refs and uploads are tiny and tests are not a throughput benchmark.
        self.lock = threading.RLock()

    # -- lookups

    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise _repo_not_found(repo_id)
        return repo

    @staticmethod
    def _resolve(repo: _Repo, revision: str) -> _Commit:
        """A branch, a tag (also as refs/heads/..., refs/tags/...) or a commit id (or a unique prefix of one)."""
        if revision.startswith("refs/heads/") and revision[11:] in repo.branches:
            return repo.commits[repo.branches[revision[11:]]]
        if revision.startswith("refs/tags/") and revision[10:] in repo.tags:
            return repo.commits[repo.tags[revision[10:]]]
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        if revision in repo.tags:
            return repo.commits[repo.tags[revision]]
        if _HEX_PREFIX_RE.match(revision.lower()):
            matches = [oid for oid in repo.commits if oid.startswith(revision.lower())]
            if len(matches) == 1:
                return repo.commits[matches[0]]
        raise _revision_not_found(revision)

    def _blob(self, entry: _Entry) -> bytes:
        return self.blobs[entry.sha256]

    # -- routing

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes, base: str) -> _Response:
        split = urlsplit(target)
        query = parse_qs(split.query, keep_blank_values=True)
        segs = [s for s in split.path.split("/") if s]  # still percent-encoded: refs may contain %2F
        if not segs:
            raise HubError(404, "Not found")
        if segs[0] == "api":
            return self._handle_api(method, segs[1:], query, headers, body, base)
        if segs[0] == "lfs-upload" and method == "PUT" and len(segs) == 5:
            repo_type, repo_id, oid = segs[1], f"{unquote(segs[2])}/{unquote(segs[3])}", segs[4]
            return self._lfs_put(repo_type, repo_id, oid, body)
        repo_type = _API_TYPES.get(segs[0])
        if repo_type in ("dataset", "space"):
            segs = segs[1:]
        else:
            repo_type = "model"
        if len(segs) >= 2 and segs[1].endswith(".git") and segs[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{unquote(segs[0])}/{unquote(segs[1][:-4])}"
            action = segs[5] if len(segs) > 5 else ""
            if method == "POST" and action == "batch":
                return self._lfs_batch(repo_type, repo_id, _json_body(body), base)
            if method == "POST" and action == "verify":
                return self._lfs_verify(repo_type, repo_id, _json_body(body))
        if len(segs) >= 4 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            revision, rest = self._take_revision(segs[3:])
            return self._resolve_file(repo_type, f"{unquote(segs[0])}/{unquote(segs[1])}", revision,
                                      "/".join(unquote(s) for s in rest), headers)
        raise HubError(404, f"Not found: {method} {split.path}")

    @staticmethod
    def _take_revision(segs: list[str]) -> tuple[str, list[str]]:
        """Split the revision off a path; special refs (refs/pr/1, refs/convert/parquet) may come unquoted."""
        if segs and unquote(segs[0]) == "refs" and len(segs) >= 3:
            return "/".join(unquote(s) for s in segs[:3]), segs[3:]
        if not segs:
            raise HubError(400, "Missing revision")
        return unquote(segs[0]), segs[1:]

    def _handle_api(
        self, method: str, segs: list[str], query: dict[str, list[str]], headers: Mapping[str, str],
        body: bytes, base: str,
    ) -> _Response:
        if segs == ["whoami-v2"] and method == "GET":
            return _json({"type": "user", "id": "0" * 24, "name": self.user, "fullname": self.user, "orgs": [],
                          "auth": {"type": "access_token",
                                   "accessToken": {"displayName": "local", "role": "write"}}})
        if segs == ["repos", "create"] and method == "POST":
            return self._create_repo(_json_body(body), base)
        if segs == ["repos", "delete"] and method in ("DELETE", "POST"):
            return self._delete_repo(_json_body(body))
        if segs == ["validate-yaml"] and method == "POST":
            return self._validate_yaml(_json_body(body))
        if len(segs) == 1 and segs[0] in _API_TYPES and method == "GET":
            return self._list_repos(_API_TYPES[segs[0]], query)
        if len(segs) < 3 or segs[0] not in _API_TYPES:
            raise HubError(404, f"Not found: /api/{'/'.join(segs)}")
        repo_type, repo_id = _API_TYPES[segs[0]], f"{unquote(segs[1])}/{unquote(segs[2])}"
        action, rest = (segs[3], segs[4:]) if len(segs) > 3 else ("", [])
        form = self._parse_body(headers, body) if method in ("POST", "PUT") else {}
        with self.lock:
            repo = self._repo(repo_type, repo_id)
            if method == "GET" and action == "":
                return self._repo_info(repo, "main", query)
            if method == "GET" and action == "revision":
                return self._repo_info(repo, self._take_revision(rest)[0], query)
            if method == "GET" and action == "refs":
                return self._refs(repo)
            if method == "GET" and action == "commits":
                return self._commits(repo, self._take_revision(rest)[0] if rest else "main", query)
            if method == "GET" and action == "tree":
                revision, path = self._take_revision(rest)
                return self._tree(repo, revision, "/".join(unquote(s) for s in path), query)
            if method == "POST" and action == "paths-info":
                return self._paths_info(repo, self._take_revision(rest)[0], form)
            if method == "POST" and action == "preupload":
                return self._preupload(repo, self._take_revision(rest)[0], form)
            if method == "POST" and action == "commit":
                if _truthy(query.get("create_pr", ["0"])[0]):
                    raise HubError(400, "create_pr is not supported by the local test Hub")
                return self._commit(repo, self._take_revision(rest)[0], body, base)
            if method == "POST" and action == "super-squash":
                return self._super_squash(repo, self._take_revision(rest)[0], form)
            if action == "branch" and rest and method in ("POST", "DELETE"):
                name = unquote("/".join(rest))
                if method == "POST":
                    return self._create_branch(repo, name, form)
                return self._delete_branch(repo, name)
            if action == "tag" and rest and method in ("POST", "DELETE"):
                name = unquote("/".join(rest))
                if method == "POST":
                    return self._create_tag(repo, name, form)
                return self._delete_tag(repo, name)
        raise HubError(404, f"Not found: {method} /api/{'/'.join(segs)}")

    @staticmethod
    def _parse_body(headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        if not body:
            return {}
        content_type = headers.get("Content-Type", "")
        if "application/x-www-form-urlencoded" in content_type:
            return {k: v if k == "paths" else v[-1] for k, v in parse_qs(body.decode()).items()}
        if "ndjson" in content_type:
            return {}  # a commit payload, parsed by _commit
        return _json_body(body)

    # -- repos

    def _create_repo(self, payload: dict[str, Any], base: str) -> _Response:
        name, namespace = payload.get("name"), str(payload.get("organization") or self.user)
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Unsupported repo type: {repo_type!r}")
        if not isinstance(name, str) or not _NAME_RE.match(name) or not _NAME_RE.match(namespace):
            raise HubError(400, f"Invalid repo name: {namespace}/{name}")
        repo_id = f"{namespace}/{name}"
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        with self.lock:
            url = f"{base}/{_URL_PREFIX[repo_type]}{repo_id}"
            if (repo_type, repo_id) in self.repos:
                # create_repo(exist_ok=True) reads the url from this answer.
                raise HubError(409, f"You already created this {repo_type} repo: {repo_id}", url=url)
            repo = _Repo(repo_type, repo_id, private, _now())
            # Like the Hub: a new repo starts with a system commit holding the default .gitattributes.
            content = DEFAULT_GITATTRIBUTES.encode()
            self.blobs[hashlib.sha256(content).hexdigest()] = content
            initial = _make_commit(None, {".gitattributes": _Entry.regular(content)}, "initial commit", "", "system")
            repo.commits[initial.oid] = initial
            repo.branches["main"] = initial.oid
            self.repos[(repo_type, repo_id)] = repo
        return _json({"url": url, "name": repo_id, "id": self._object_id(repo)})

    def _delete_repo(self, payload: dict[str, Any]) -> _Response:
        repo_id = f"{payload.get('organization') or self.user}/{payload.get('name')}"
        with self.lock:
            if self.repos.pop((payload.get("type") or "model", repo_id), None) is None:
                raise _repo_not_found(repo_id)
        return _json({})

    @staticmethod
    def _object_id(repo: _Repo) -> str:
        return hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24]

    @staticmethod
    def _validate_yaml(payload: dict[str, Any]) -> _Response:
        match = _YAML_BLOCK_RE.search(str(payload.get("content", "")))
        if match:
            try:
                data = yaml.safe_load(match.group(2))
            except yaml.YAMLError as e:
                return _json({"errors": [{"message": f"Invalid YAML: {e}"}], "warnings": []}, 400)
            if data is not None and not isinstance(data, dict):
                return _json({"errors": [{"message": "YAML metadata must be a mapping"}], "warnings": []}, 400)
        return _json({"errors": [], "warnings": []})

    def _list_repos(self, repo_type: str, query: dict[str, list[str]]) -> _Response:
        author, search = query.get("author", [""])[0], query.get("search", [""])[0].lower()
        with self.lock:
            repos = [r for (t, _), r in sorted(self.repos.items()) if t == repo_type]
            return _json([
                {"_id": self._object_id(r), "id": r.repo_id, "author": r.repo_id.split("/")[0],
                 "sha": r.commits[r.branches["main"]].oid, "private": r.private,
                 "lastModified": _iso(r.commits[r.branches["main"]].date), "createdAt": _iso(r.created_at)}
                for r in repos
                if (not author or r.repo_id.split("/")[0] == author) and search in r.repo_id.lower()
            ])

    def _repo_info(self, repo: _Repo, revision: str, query: dict[str, list[str]]) -> _Response:
        commit = self._resolve(repo, revision)
        readme = commit.files.get("README.md")
        card = _card_data(self._blob(readme) if readme else None)
        blobs = _truthy(query.get("blobs", ["false"])[0])
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = commit.files[path]
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256,
                                      "pointerSize": len(_lfs_pointer(entry.sha256, entry.size))}
            siblings.append(sibling)
        tags = [str(t) for t in _as_list((card or {}).get("tags"))]
        for key in ("license", "language", "task_categories", "size_categories"):
            tags += [f"{key}:{v}" for v in _as_list((card or {}).get(key))]
        info: dict[str, Any] = {
            "_id": self._object_id(repo), "id": repo.repo_id, "author": repo.repo_id.split("/")[0],
            "sha": commit.oid, "lastModified": _iso(commit.date), "createdAt": _iso(repo.created_at),
            "private": repo.private, "gated": repo.gated, "disabled": False, "downloads": 0, "downloadsAllTime": 0,
            "likes": 0, "tags": [*tags, "region:us"], "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.files.values()),
        }
        if card is not None:
            info["cardData"] = card
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        expand = query.get("expand", []) + query.get("expand[]", [])
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id", *expand)}
        return _json(info)

    # -- refs and history

    def _refs(self, repo: _Repo) -> _Response:
        def ref(kind: str, name: str, oid: str) -> dict[str, str]:
            return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}

        branches = sorted(repo.branches.items(), key=lambda kv: (kv[0] != "main", kv[0]))
        return _json({
            "branches": [ref("heads", n, oid) for n, oid in branches],
            "tags": [ref("tags", n, oid) for n, oid in sorted(repo.tags.items())],
            "converts": [], "pullRequests": [],
        })

    def _history(self, repo: _Repo, commit: _Commit) -> Iterator[_Commit]:
        current: _Commit | None = commit
        while current is not None:
            yield current
            current = repo.commits[current.parent] if current.parent else None

    def _commits(self, repo: _Repo, revision: str, query: dict[str, list[str]]) -> _Response:
        formatted = "formatted" in query.get("expand[]", []) + query.get("expand", [])
        items = []
        for c in self._history(repo, self._resolve(repo, revision)):
            item: dict[str, Any] = {"id": c.oid, "title": c.title, "message": c.message,
                                    "authors": [{"user": c.author}], "date": _iso(c.date)}
            if formatted:
                item["formatted"] = {"title": html.escape(c.title), "message": html.escape(c.message)}
            items.append(item)
        return _json(items)

    def _create_branch(self, repo: _Repo, name: str, payload: dict[str, Any]) -> _Response:
        if not _REF_NAME_RE.match(name):
            raise HubError(400, f"Invalid reference for a branch: {name}")
        if name in repo.branches:
            raise HubError(409, f"Reference already exists: refs/heads/{name}")
        start = self._resolve(repo, str(payload.get("startingPoint") or "main"))
        repo.branches[name] = start.oid
        return _json({})

    def _delete_branch(self, repo: _Repo, name: str) -> _Response:
        if name == "main":
            raise HubError(403, "Cannot delete the default branch 'main'")
        if repo.branches.pop(name, None) is None:
            raise _revision_not_found(name)
        return _json({})

    def _create_tag(self, repo: _Repo, revision: str, payload: dict[str, Any]) -> _Response:
        name = str(payload.get("tag") or "")
        if not _REF_NAME_RE.match(name):
            raise HubError(400, f"Invalid tag name: {name!r}")
        if name in repo.tags:
            raise HubError(409, f"Tag already exists: refs/tags/{name}")
        repo.tags[name] = self._resolve(repo, revision).oid
        return _json({})

    def _delete_tag(self, repo: _Repo, name: str) -> _Response:
        if repo.tags.pop(name, None) is None:
            raise _revision_not_found(name)
        return _json({})

    # -- tree, paths-info

    def _last_commit(self, repo: _Repo, commit: _Commit, path: str) -> _Commit:
        """The newest commit that changed `path` (file blob or directory tree) along the first-parent chain."""

        def oid_at(c: _Commit) -> str | None:
            entry = c.files.get(path)
            return entry.oid if entry else c.dirs.get(path)

        current = commit
        while current.parent is not None:
            parent = repo.commits[current.parent]
            if oid_at(parent) != oid_at(current):
                return current
            current = parent
        return current

    def _entry_json(self, repo: _Repo, commit: _Commit, path: str, expand: bool) -> dict[str, Any]:
        entry = commit.files.get(path)
        if entry is None:
            out: dict[str, Any] = {"type": "directory", "oid": commit.dirs[path], "size": 0, "path": path}
        else:
            out = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
            if entry.lfs:
                out["lfs"] = {"oid": entry.sha256, "size": entry.size,
                              "pointerSize": len(_lfs_pointer(entry.sha256, entry.size))}
        if expand:
            last = self._last_commit(repo, commit, path)
            out["lastCommit"] = {"id": last.oid, "title": last.title, "date": _iso(last.date)}
            if entry is not None:
                out["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False, "virusNames": None},
                                             "pickleImportScan": None}
        return out

    def _tree(self, repo: _Repo, revision: str, path: str, query: dict[str, list[str]]) -> _Response:
        commit = self._resolve(repo, revision)
        path = path.strip("/")
        if path not in commit.dirs:
            # A file or a missing path: the Hub answers 404 and HfFileSystem then looks in the parent.
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        recursive, expand = _truthy(query.get("recursive", [""])[0]), _truthy(query.get("expand", [""])[0])
        prefix = f"{path}/" if path else ""
        paths = set()
        for candidate in [*commit.files, *commit.dirs]:
            if candidate and candidate.startswith(prefix) and candidate != path:
                if recursive or "/" not in candidate[len(prefix):]:
                    paths.add(candidate)
        # Directories first, then files, each sorted: a stable order the tests can rely on.
        ordered = sorted(paths, key=lambda p: (p in commit.files, p))
        return _json([self._entry_json(repo, commit, p, expand) for p in ordered])

    def _paths_info(self, repo: _Repo, revision: str, form: dict[str, Any]) -> _Response:
        commit = self._resolve(repo, revision)
        expand = _truthy(form.get("expand", False))
        out, seen = [], set()
        for raw in _as_list(form.get("paths")):
            path = str(raw).strip("/")
            if path and path not in seen and (path in commit.files or path in commit.dirs):
                seen.add(path)
                out.append(self._entry_json(repo, commit, path, expand))
        return _json(out)

    # -- uploads

    def _lfs_patterns(self, commit: _Commit) -> list[str]:
        entry = commit.files.get(".gitattributes")
        if entry is None:
            return list(DEFAULT_LFS_PATTERNS)
        lines = self._blob(entry).decode("utf-8", errors="replace").splitlines()
        return [line.split()[0] for line in lines if "filter=lfs" in line and not line.startswith("#")]

    @staticmethod
    def _matches(path: str, patterns: list[str]) -> bool:
        name = path.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatchcase(path if "/" in p else name, p.lstrip("/")) for p in patterns)

    def _preupload(self, repo: _Repo, revision: str, payload: dict[str, Any]) -> _Response:
        commit = self._resolve(repo, revision)
        patterns = self._lfs_patterns(commit)
        files = []
        for item in payload.get("files", []):
            path = _clean_path(item.get("path"))
            sample = base64.b64decode(item.get("sample") or "")
            large = int(item.get("size") or 0) >= LFS_SIZE_THRESHOLD or b"\0" in sample
            existing = commit.files.get(path)
            files.append({
                "path": path,
                "uploadMode": "lfs" if large or self._matches(path, patterns) else "regular",
                "shouldIgnore": False,
                # What the client compares with its local oid to skip unchanged files.
                "oid": (existing.sha256 if existing.lfs else existing.oid) if existing else None,
            })
        return _json({"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, repo_type: str, repo_id: str, payload: dict[str, Any], base: str) -> _Response:
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the LFS 'upload' operation is supported")
        objects = []
        with self.lock:
            repo = self._repo(repo_type, repo_id)
            for obj in payload.get("objects", []):
                oid, size = str(obj.get("oid", "")), obj.get("size")
                out: dict[str, Any] = {"oid": oid, "size": size}
                if not _SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
                    out["error"] = {"code": 422, "message": "Invalid oid or size"}
                elif oid in self.blobs and len(self.blobs[oid]) == size:
                    repo.lfs_oids.add(oid)  # already stored: no actions, the client skips the upload
                else:
                    ns, name = repo_id.split("/")
                    out["authenticated"] = True
                    out["actions"] = {
                        "upload": {"href": f"{base}/lfs-upload/{repo_type}/{ns}/{name}/{oid}"},
                        "verify": {"href": f"{base}/{repo.url_path}.git/info/lfs/objects/verify"},
                    }
                objects.append(out)
        return _json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                     headers={"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, repo_type: str, repo_id: str, oid: str, body: bytes) -> _Response:
        if hashlib.sha256(body).hexdigest() != oid:  # hashed outside the lock
            raise HubError(400, f"sha256 mismatch for LFS object {oid}")
        with self.lock:
            repo = self._repo(repo_type, repo_id)
            self.blobs.setdefault(oid, body)
            repo.lfs_oids.add(oid)
        return _Response(200)

    def _lfs_verify(self, repo_type: str, repo_id: str, payload: dict[str, Any]) -> _Response:
        oid, size = str(payload.get("oid")), payload.get("size")
        with self.lock:
            repo = self._repo(repo_type, repo_id)
            if oid not in repo.lfs_oids or len(self.blobs[oid]) != size:
                raise HubError(404, f"LFS object {oid} not found (or wrong size)")
        return _json({})

    # -- commits

    def _commit(self, repo: _Repo, revision: str, body: bytes, base: str) -> _Response:
        """Apply an NDJSON commit to a branch, all or nothing (called with the lock held)."""
        try:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise HubError(400, f"Invalid NDJSON payload: {e}") from None
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The commit payload must start with a header line")
        header = lines[0].get("value") or {}
        title = str(header.get("summary") or "").strip()
        if not title:
            raise HubError(400, "The commit summary must not be empty")
        branch = revision[11:] if revision.startswith("refs/heads/") else revision
        if branch not in repo.branches:
            if revision in repo.tags or _HEX_PREFIX_RE.match(revision):
                raise HubError(400, f"Commits can only be pushed to a branch, not to {revision!r}")
            raise _revision_not_found(revision)
        head = repo.commits[repo.branches[branch]]
        parent = header.get("parentCommit")
        if parent is not None and not (isinstance(parent, str) and len(parent) >= 5
                                       and head.oid.startswith(parent.lower())):
            raise HubError(412, _STALE_PARENT_MESSAGE)

        files = dict(head.files)
        new_blobs: dict[str, bytes] = {}
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            if key == "file":
                path = _clean_path(value.get("path"))
                try:
                    content = (base64.b64decode(value.get("content", ""), validate=True)
                               if value.get("encoding", "base64") == "base64"
                               else str(value.get("content", "")).encode())
                except binascii.Error:
                    raise HubError(400, f"Invalid base64 content for {path}") from None
                files[path] = _Entry.regular(content)
                new_blobs[files[path].sha256] = content
            elif key == "lfsFile":
                path, oid = _clean_path(value.get("path")), str(value.get("oid", ""))
                if value.get("algo", "sha256") != "sha256" or oid not in repo.lfs_oids:
                    raise HubError(400, f"LFS object {oid} for {path} was not uploaded to this repo")
                files[path] = _Entry.large(oid, len(self.blobs[oid]))
            elif key == "deletedFile":
                path = _clean_path(value.get("path"))
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif key == "deletedFolder":
                folder = _clean_path(str(value.get("path", "")).rstrip("/"))
                doomed = [p for p in files if p.startswith(folder + "/")]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {folder}", "EntryNotFound")
                for p in doomed:
                    del files[p]
            elif key == "copyFile":
                path, src = _clean_path(value.get("path")), _clean_path(value.get("srcPath"))
                source = self._resolve(repo, str(value.get("srcRevision") or branch)).files.get(src)
                if source is None:
                    raise HubError(404, f"A file with this name doesn't exist: {src}", "EntryNotFound")
                files[path] = source
            else:
                raise HubError(400, f"Unknown commit operation: {key!r}")
        dirs = {p.rsplit("/", i)[0] for p in files for i in range(1, p.count("/") + 1)}
        if clash := sorted(dirs.intersection(files)):
            raise HubError(400, f"{clash[0]} cannot be both a file and a directory")

        commit = _make_commit(head, files, title, str(header.get("description") or ""), self.user)
        self.blobs.update(new_blobs)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return _json({"success": True, "commitOid": commit.oid, "commitUrl": f"{base}/{repo.url_path}/commit/"
                      f"{commit.oid}", "hookOutput": "", "pullRequestUrl": None})

    def _super_squash(self, repo: _Repo, branch: str, payload: dict[str, Any]) -> _Response:
        if branch not in repo.branches:
            raise _revision_not_found(branch)
        head = repo.commits[repo.branches[branch]]
        title = str(payload.get("message") or "Super-squash commit")
        commit = _make_commit(None, dict(head.files), title, "", self.user)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        return _json({"commitId": commit.oid})

    # -- downloads

    def _resolve_file(
        self, repo_type: str, repo_id: str, revision: str, path: str, headers: Mapping[str, str]
    ) -> _Response:
        with self.lock:
            commit = self._resolve(self._repo(repo_type, repo_id), revision)
            entry = commit.files.get(path)
            if entry is None:
                # X-Repo-Commit lets hf_hub_download cache the miss for this commit.
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
            data = self._blob(entry)
        out = {
            "X-Repo-Commit": commit.oid, "ETag": f'"{entry.etag}"', "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if entry.lfs:
            out.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        byte_range = headers.get("Range")
        if not byte_range:
            return _Response(200, data, out)
        match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", byte_range)
        if not match or not (match.group(1) or match.group(2)):
            return _Response(200, data, out)  # unsupported (e.g. multi-range): whole file, like many servers
        size = len(data)
        if match.group(1):
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        else:  # suffix range: the last N bytes
            start, end = max(size - int(match.group(2)), 0), size - 1
        if start >= size or start > end:
            return _Response(416, b"", {**out, "Content-Range": f"bytes */{size}"})
        return _Response(206, data[start:end + 1], {**out, "Content-Range": f"bytes {start}-{end}/{size}"})


# ---------------------------------------------------------------------------------------------- server


def _request_kind(path: str) -> str:
    """What a request path does, without repo, revision or file: "api/tree", "resolve", "lfs-upload", ..."""
    segs = [s for s in urlsplit(path).path.split("/") if s]
    if segs[:1] == ["api"] and len(segs) >= 5:
        return f"api/{segs[4]}"
    if segs[:1] == ["api"] and len(segs) == 4:
        return "api/repo"
    if segs[:1] == ["lfs-upload"]:
        return "lfs-upload"
    for kind in ("resolve", "info"):
        if kind in segs:
            return kind if kind == "resolve" else "/".join(segs[segs.index(kind):])
    return "/".join(segs[:2])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect
    timeout = 120  # idle keep-alive connections end eventually
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        method = self.command
        body = self._read_body()  # always drain it, so the connection stays usable after an error
        host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
        try:
            injected = self.server.owner.take_fault(method, self.path)
            if injected is not None:
                response = injected
            else:
                response = self.server.hub.handle(method, self.path, self.headers, body, f"http://{host}")
        except HubError as e:
            response = e.response()
        except Exception as e:  # a bug here, not the client's: keep the traceback for the test to report
            self.server.owner.errors.append(f"{method} {self.path}\n{traceback.format_exc()}")
            response = _json({"error": f"Internal error in the local test Hub: {e!r}"}, 500)
        self.server.owner.requests.append((method, self.path, response.status))
        self.send_response(response.status)
        for name, value in response.headers.items():
            # Header values are latin-1 on the wire: escape the rest (e.g. a non-ASCII path in an error message).
            self.send_header(name, " ".join(value.splitlines()).encode("latin-1", "backslashreplace").decode("latin-1"))
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.owner.verbose:
            super().log_message(format, *args)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() closes the connections itself instead of waiting on idle keep-alives
    request_queue_size = 128  # clients open many connections at once (HfFileSystem lists with 16 threads)
    hub: _Hub
    owner: HubServer

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client hanging up mid-request (or stop() ending its connection) is not worth a traceback on stderr.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        # A keep-alive connection is served by its own thread, which outlives serve_forever(): end them too.
        with self.connections_lock:
            for conn in self.connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class HubServer:
    """A local Hub on `host:port` (port 0 = any free port), served from a background thread.

    `start()` returns the URL (also `url`); `stop()` or leaving the `with` block shuts it down.
    `requests` logs (method, path, status) of every request; `errors` holds the tracebacks of internal
    errors (answered 500), which tests should expect to stay empty.
    """

    token = DEFAULT_TOKEN

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, user: str = DEFAULT_USER,
                 verbose: bool = False) -> None:
        self.host, self.port, self.user, self.verbose = host, port, user, verbose
        self.requests: deque[tuple[str, str, int]] = deque(maxlen=100_000)
        self.errors: list[str] = []
        self._faults: list[list[Any]] = []  # [method, path part, status, retry_after, times left]
        self._faults_lock = threading.Lock()
        self._hub = _Hub(user)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def fail(self, status: int, path_contains: str = "", method: str | None = None, times: int = 1,
             retry_after: int | None = None) -> None:
        """Answer the next `times` requests whose path contains `path_contains` (and of `method`, if given) with
        `status` (429, 503, ...) and, if given, a `Retry-After: retry_after` header, before the Hub sees them."""
        with self._faults_lock:
            self._faults.append([method, path_contains, status, retry_after, times])

    def take_fault(self, method: str, path: str) -> _Response | None:
        with self._faults_lock:
            for fault in self._faults:
                if fault[4] > 0 and (fault[0] in (None, method)) and fault[1] in path:
                    fault[4] -= 1
                    headers = {"Retry-After": str(fault[3])} if fault[3] is not None else {}
                    return _json({"error": f"injected {fault[2]}"}, fault[2], headers)
        return None

    def counts(self, since: int = 0) -> dict[str, int]:
        """Requests logged after the first `since`, by kind: "METHOD /first/path/parts" (repo and revision
        left out), so a test can count e.g. file downloads and uploads apart from API calls."""
        out: dict[str, int] = {}
        for method, path, _ in list(self.requests)[since:]:
            out[f"{method} {_request_kind(path)}"] = out.get(f"{method} {_request_kind(path)}", 0) + 1
        return out

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the hub server is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        if self._httpd is None:
            httpd = _HTTPServer((self.host, self.port))
            httpd.hub, httpd.owner = self._hub, self
            self._httpd = httpd
            self._thread = threading.Thread(target=httpd.serve_forever, name="hub-server", daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd.close_connections()
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._httpd = self._thread = None

    def __enter__(self) -> HubServer:
        self.start()
        return self

    def seed_model(self, repo_id: str, files: Mapping[str, bytes | int], *, gated: bool | str = False,
                   private: bool = False) -> str:
        """A model repository with one commit on main, made here (not over HTTP): a file given as bytes is
        served; one given as an int is an LFS file of that size whose content is never served (a 15 GB weight
        file's listing, without its bytes). Returns the commit id."""
        entries: dict[str, _Entry] = {}
        with self._hub.lock:
            for path, content in files.items():
                if isinstance(content, int):
                    entries[path] = _Entry.large(hashlib.sha256(path.encode()).hexdigest(), content)
                else:
                    entries[path] = _Entry.regular(content)
                    self._hub.blobs[entries[path].sha256] = content
            repo = _Repo("model", repo_id, private, _now(), gated=gated)
            commit = _make_commit(None, entries, "seed", "", "system")
            repo.commits[commit.oid] = commit
            repo.branches["main"] = commit.oid
            self._hub.repos[("model", repo_id)] = repo
        return commit.oid

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client_env(self, hf_home: str | os.PathLike[str], base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment for a client process: this endpoint, no Xet, online, and every cache under `hf_home`.

        Set it before `huggingface_hub` / `datasets` are imported (they read it at import time).
        """
        env = dict(os.environ if base is None else base)
        for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HUGGINGFACE_ASSETS_CACHE",
                     "HF_XET_CACHE", "HF_DATASETS_CACHE", "HF_TOKEN_PATH", "TRANSFORMERS_OFFLINE",
                     "HUGGINGFACE_CO_STAGING", "HF_HUB_ENABLE_HF_TRANSFER"):
            env.pop(name, None)
        env.update({
            "HF_ENDPOINT": self.url, "HF_HOME": str(Path(hf_home)), "HF_TOKEN": self.token,
            "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
        })
        return env


def start_hub_server(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> HubServer:
    """Start a server and return it (its URL is `.url`); stop it with `.stop()`."""
    server = HubServer(host, port, **kwargs)
    server.start()
    return server


@contextmanager
def hub_server(host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> Iterator[HubServer]:
    """`with hub_server() as hub:` a running server for the block, stopped on exit."""
    server = start_hub_server(host, port, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a local, in-memory Hugging Face Hub API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    with hub_server(args.host, args.port, verbose=args.verbose) as hub:
        print(f"HF_ENDPOINT={hub.url} HF_HUB_DISABLE_XET=1", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
