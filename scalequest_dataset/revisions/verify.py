"""The one check of what a revision says: a revision from someone else (a store, a Hub repo, a run directory
someone handed over) is untrusted input, and nothing it claims about itself decides anything.

- `check_path`: every path a revision names (manifest file names, card `configs` paths, tree entries) before
  it is used: relative, inside its folder, no `..`, not absolute, no backslash or NUL. A violation is an
  `UnsafeRevision` naming the file; nothing is written.
- `check_file`: a file's bytes against the record that names it: its size, its sha256 and the content digest
  recomputed from its rows (a manifest whose content digest does not match its own file is corrupt). What it
  returns (the recomputed digests) is what decides "same data", "reproduces" and an attestation.
- `parse_record`: a manifest, record or attestation from a revision, under a size cap, validated strictly.

The fetching itself (to a temporary name, checked, then renamed) is `locator.Source.file`, the one function
every reader (load, diff, regenerate, the builder) gets a revision's file through."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from pydantic import BaseModel, Field, model_validator

from ..recipe.params import ConfigError, Strict
from ..run.records import FileRecord, Manifest
from .stores.base import RepoLayout, VerificationError, too_big

Model = TypeVar("Model", bound=BaseModel)


class UnsafeRevision(VerificationError):
    """A revision names a path that would reach outside its own files (or is not a regular file)."""


def check_path(path: str, folder: str | None, where: str) -> str:
    """`path` (POSIX, relative to the revision's root) if it is safe to use, inside `folder` (e.g. "data/questions/")
    when given; else UnsafeRevision naming it and `where` it was read."""
    problem = path_problem(path, folder)
    if problem:
        raise UnsafeRevision(f"{where}: unsafe revision: the path {path!r} {problem}; nothing was read or written")
    return path


def path_problem(path: str, folder: str | None = None) -> str | None:
    if not isinstance(path, str) or not path:
        return "is empty"
    if "\0" in path:
        return "holds a NUL byte"
    if "\\" in path:
        return "holds a backslash"
    if path.startswith("/") or (len(path) > 1 and path[1] == ":"):
        return "is absolute"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' part"
    if folder is not None:
        inside = PurePosixPath(folder.rstrip("/")).parts
        if tuple(parts[: len(inside)]) != inside or len(parts) <= len(inside):
            return f"is outside {folder}"
    return None


@dataclass(frozen=True)
class Checked:
    """A file whose bytes passed `check_file`: its digests as recomputed here, not as any record claims."""

    path: Path
    bytes: int
    sha256: str
    content: str


def sha256_of(path: Path) -> tuple[int, str]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def file_problem(path: Path, record: FileRecord, content: bool = True) -> tuple[str | None, Checked | None]:
    """(what is wrong, None) or (None, the recomputed digests) for the file at `path` against `record`: a regular
    file (not a link), its size, its sha256, and (with `content`) its rows' count and content digest."""
    import os
    import stat

    from . import known

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "is missing", None
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file (a symlink or a folder)", None
    # What we computed ourselves from these very bytes before (never what a record claims): see `known`.
    seen = known.lookup(Path(path), st)
    if seen is not None and (seen.rows is not None or not content):
        size, sha, rows, digest = seen.size, seen.sha256, seen.rows, seen.content
    else:
        size, sha = sha256_of(path)
        rows = digest = None
    if size != record.bytes:
        return f"has {size} bytes, its manifest says {record.bytes}", None
    if sha != record.sha256:
        return f"does not match its manifest: expected sha256 {record.sha256}, found {sha}", None
    if content and digest is None:
        rows, digest = _content(path)
        if rows is None:
            return f"is not a readable Parquet file ({digest})", None
    if seen is None or (content and seen.rows is None):
        known.remember(Path(path), st, known.Known(sha, size, rows, digest))
    if not content:
        digest = record.content
    else:
        if rows != record.rows:
            return f"holds {rows} rows, its manifest says {record.rows}", None
        if digest != record.content:
            return (f"holds rows whose content digest is {digest}, its manifest says {record.content} (the manifest "
                    "does not describe its own file)"), None
    return None, Checked(Path(path), size, sha, digest)


def _content(path: Path) -> tuple[int | None, str]:
    """(rows, content digest) recomputed from the file's rows; (None, why) when the bytes are not Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..run.files import content_digest

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {str(exc)[:200]}"
    return table.num_rows, content_digest(table)


def check_file(path: Path, record: FileRecord, where: str, content: bool = True) -> Checked:
    problem, checked = file_problem(path, record, content)
    if problem:
        raise VerificationError(f"{where} {problem}")
    assert checked is not None
    return checked


def parse_record(model: type[Model], blob: bytes, source: str) -> Model:
    """A record read from a revision, under the size cap, validated strictly (a ConfigError naming `source`)."""
    from ..run import records as rec

    too_big(len(blob), source)
    return rec.parse(model, blob, source)


def check_manifest(m: Manifest, stage: str, source: str) -> Manifest:
    """A manifest read from a revision, beyond its types: it is the stage it is filed as; its counts and indexes
    are non-negative and add up; its file names are safe and distinct; its stage content digest is the one its
    shards' digests give. A ConfigError naming `source` and the field otherwise."""
    from ..run.records import stage_content

    def bad(field: str, why: str) -> ConfigError:
        return ConfigError(f"{source} is not a valid manifest: {field}: {why}")

    if m.stage != stage:
        raise bad("stage", f"{m.stage!r}, filed as {stage!r}")
    indexes = [s.index for s in m.shards]
    if indexes != list(range(len(indexes))):
        raise bad("shards.index", f"{indexes[:10]}{'...' if len(indexes) > 10 else ''} (not 0, 1, 2, ... in order)")
    names: set[str] = set()
    drops: dict[str, int] = {}
    for s in m.shards:
        where = f"shards.{s.index}"
        if s.rows_in < 0:
            raise bad(f"{where}.rows_in", f"{s.rows_in} is negative")
        if "train" not in s.files:
            raise bad(f"{where}.files", "no train file")
        for split, f in s.files.items():
            check_path(f"{RepoLayout.data_folder(stage)}{f.file}", RepoLayout.data_folder(stage), f"{source} {where}")
            if "/" in f.file or f.file in names:
                raise bad(f"{where}.files.{split}.file", f"{f.file!r} (a file name of its own, once per stage)")
            names.add(f.file)
        for reason, n in s.drops.items():
            if n < 0:
                raise bad(f"{where}.drops.{reason}", f"{n} is negative")
            drops[reason] = drops.get(reason, 0) + n
        if min(s.tokens.prompt, s.tokens.completion) < 0:
            raise bad(f"{where}.tokens", "negative")
    c = m.counts
    if c.rows_in != sum(s.rows_in for s in m.shards):
        raise bad("counts.rows_in", f"{c.rows_in}, its shards add up to {sum(s.rows_in for s in m.shards)}")
    if c.rows_out != m.rows("train"):
        raise bad("counts.rows_out", f"{c.rows_out}, its train files hold {m.rows('train')}")
    if c.dropped != drops:
        raise bad("counts.dropped", f"{c.dropped}, its shards add up to {drops}")
    if m.content != stage_content(m.shards):
        raise bad("content", f"{m.content} is not the digest of its shards' content digests")
    return m


class Attestation(Strict):
    """A recorded reproduction (`publish.attest` writes it; the card lists it), as read back from a revision."""

    stage: str
    revision: str
    commit: str
    fingerprint: str
    date: str
    compared: list[str]
    shards_checked: int = Field(ge=1)
    shards_matched: int = Field(ge=0)
    byte_identical: int = Field(ge=0)
    digests: dict[str, dict[str, str]]
    environment: dict[str, Any]
    engines: dict[str, dict[str, Any]]
    environment_summary: str

    @model_validator(mode="after")
    def _consistent(self) -> Attestation:
        if not self.byte_identical <= self.shards_matched == self.shards_checked:
            raise ValueError(f"byte_identical {self.byte_identical} <= shards_matched {self.shards_matched} == "
                             f"shards_checked {self.shards_checked} does not hold (only a full reproduction is "
                             "attested)")
        return self


def card_globs(blob: bytes, where: str) -> dict[str, dict[str, list[str]]]:
    """The card's YAML `configs:` as {config: {split: [glob, ...]}}, every glob checked to stay inside its config's
    folder (data/<config>/). Unreadable YAML or a malformed entry is a ConfigError naming the card."""
    import yaml

    too_big(len(blob), where)
    try:
        text = blob.decode("utf-8")
        front = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else {}
    except (UnicodeDecodeError, yaml.YAMLError, IndexError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{where}: the card's YAML front matter cannot be read ({first})") from None
    if not isinstance(front, dict) or not isinstance(front.get("configs", []), list):
        raise ConfigError(f"{where}: the card's front matter is not a mapping with a `configs:` list")
    out: dict[str, dict[str, list[str]]] = {}
    for entry in front.get("configs") or []:
        name = entry.get("config_name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or path_problem(name) or "/" in name:
            raise UnsafeRevision(f"{where}: unsafe revision: a `configs:` entry names {name!r}, not a stage")
        data_files = entry.get("data_files", [])
        items = data_files if isinstance(data_files, list) else [data_files]
        splits: dict[str, list[str]] = {}
        for item in items:
            split, paths = ("train", item) if isinstance(item, str) else \
                (item.get("split", "train"), item.get("path")) if isinstance(item, dict) else (None, None)
            for pattern in paths if isinstance(paths, list) else [paths]:
                if not isinstance(split, str) or not isinstance(pattern, str):
                    raise ConfigError(f"{where}: configs.{name}.data_files: {item!r} is not a split and path")
                check_path(pattern, RepoLayout.data_folder(name), f"{where} configs.{name}")
                splits.setdefault(split, []).append(pattern)
        out[name] = splits
    return out
