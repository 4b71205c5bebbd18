"""Typed records of a run, each with a JSON round trip: the plan of a stage, the completion record of a shard,
and the manifest of a finished stage. Everything else (publish, diff, regenerate, the card, status) reads
these types, never string keys.

A manifest has two parts (README: Publishing every stage as a dataset revision): what defines the data - the recipe (config without throughput
knobs, fingerprint, pinned models, the input's fingerprint and content digest) and its result (per shard: rows
and content digests; counts, drop reasons, tokens) - and how this execution went (per shard: seconds, host,
worker, engines, library versions; the stage's cost). `Manifest.identity()` is the first part alone: equal
identities mean the same data, whatever machine, worker count, library version or Parquet writer made it.

Records from someone else's store are untrusted input: `parse` validates them as strictly as a preset and
names the field and the file that is wrong."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError

from ..recipe.params import ConfigError, Strict

if TYPE_CHECKING:
    from .urlpath import UrlPath

Model = TypeVar("Model", bound=BaseModel)


class FileRecord(Strict):
    """One Parquet file of a shard. `sha256` is the file's bytes; `content` is a digest of its rows that does
    not depend on the Parquet writer, its version, compression or embedded metadata (files.content_digest)."""

    file: str
    rows: int = Field(ge=0)
    bytes: int = Field(ge=0)
    sha256: str
    content: str
    writer: str | None = None  # the file's `created_by` (e.g. "parquet-cpp-arrow version 26.0.1")
    arrow_bytes: int | None = Field(None, ge=0)  # the rows' size in Arrow: the card's `num_bytes`, as `datasets` counts


class ShardSpec(Strict):
    """What one shard computes: rows [start, stop) of the input stage, or a source descriptor (no input)."""

    index: int = Field(ge=0)
    rows: int = Field(ge=0)
    start: int = 0
    stop: int = 0
    source: dict[str, Any] | None = None


class PinnedModel(Strict):
    id: str
    revision: str  # a Hub commit sha, or a content digest ("sha256:...", "gguf-sha256:...")


class InputRef(Strict):
    """The stage a stage read, by identity: its fingerprint and the digest of its rows' content. Where it was
    published (`revision`, `commit`) is added by `publish` and is not part of the data's identity."""

    stage: str
    fingerprint: str
    content: str
    revision: str | None = None
    commit: str | None = None


class Plan(Strict):
    format: Literal[1] = 1
    stage: str
    fingerprint: str
    config: str  # fingerprint of what the config says about this stage, before resolution: a resume matches it
    input: InputRef | None
    models: dict[str, PinnedModel]
    shards: list[ShardSpec]
    prepared: FileRecord | None = None  # state/<stage>/prepared.parquet, if the stage prepares
    # CPU seconds of planning (the whole-input passes: the cut, dedup's and decontamination's `prepare`), carried
    # into the manifest's cost. Execution, not identity: a plan is written once and never compared on it.
    seconds: float = 0.0


class Tokens(Strict):
    prompt: int = 0  # tokens read by generation
    completion: int = 0  # tokens generated

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(prompt=self.prompt + other.prompt, completion=self.completion + other.completion)


class _ExecutionBase(Strict):
    seconds: float
    started: str  # ISO 8601, UTC
    host: str
    worker: str  # which worker ran it: "in-process", "local-1", "ray-actor-0", "slice-3/8"
    pid: int
    devices: str | None = None  # CUDA_VISIBLE_DEVICES as the worker saw it
    gpus: int = 0
    attempt: int = Field(1, ge=1)  # > 1: a worker died running it before (a retry)
    # `run --from`: input rows whose outputs were taken from the source version (no engine call), their tokens
    # (counted in the shard's tokens, as a run from scratch counts them, but not generated now), and whether the
    # shard's files were taken whole.
    reused_rows: int = Field(0, ge=0)
    reused_tokens: Tokens = Tokens()
    reused_shard: bool = False
    # seconds (to the microsecond: a small shard takes less than a millisecond) spent extracting and comparing final
    # answers (self-consistency difficulty: on a thread, overlapping the engine call; self-consistency reward: all
    # of its work)
    answer_seconds: float = 0.0
    engines: dict[str, dict[str, Any]] = Field(default_factory=dict)  # model id -> the engine's info (version, device, dtype, threads...)


class Execution(_ExecutionBase):
    """How one shard's work went. Never part of the data's identity."""

    # split -> files.stamp() of the file just after this worker wrote it on `host`: on that host, while a file keeps
    # its stamp, later steps of the run (resume, finalize, status, the next stage's plan and reads) trust the sha256
    # computed as it was written instead of reading it again. Kept in the shard record only, never in a manifest.
    stamps: dict[str, list[int]] = Field(default_factory=dict)

    environment: dict[str, Any] = Field(default_factory=dict)  # python, platform, library versions, numerics-relevant env flags


class ShardRecord(Strict):
    """Written last, atomically: a shard is complete when its record exists and its files match it."""

    format: Literal[1] = 1
    stage: str
    index: int
    fingerprint: str
    rows_in: int
    files: dict[str, FileRecord]  # split -> file
    drops: dict[str, int] = Field(default_factory=dict)  # drop reason -> rows
    tokens: Tokens = Tokens()
    execution: Execution


# ---------------------------------------------------------------------------------------------- manifest


class ManifestShard(Strict):
    index: int
    rows_in: int
    files: dict[str, FileRecord]
    drops: dict[str, int] = Field(default_factory=dict)
    tokens: Tokens = Tokens()


class Counts(Strict):
    rows_in: int
    rows_out: int
    dropped: dict[str, int] = Field(default_factory=dict)  # drop reason -> rows

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())


class Recipe(Strict):
    seed: int
    code_version: str
    config: dict[str, Any]  # the run config up to this stage, without throughput knobs (RunConfig.recipe)
    params: dict[str, Any]  # this stage's section of it
    prompts: dict[str, str]
    models: dict[str, PinnedModel]  # role -> pinned identity
    engine: dict[str, Any] | None  # the output-relevant engine settings (None: the stage loads no model)
    input: InputRef | None


class ShardExecution(_ExecutionBase):
    index: int
    environment: str  # a key of ManifestExecution.environments


class Cost(Strict):
    plan_seconds: float = 0.0  # CPU seconds of the plan's whole-input passes (serial, before any shard)
    wall_seconds: float = 0.0  # first shard start to last shard end (across resumes: their sum of spans)
    worker_seconds: float = 0.0  # sum of shard seconds
    gpu_seconds: float = 0.0  # sum of shard seconds x GPUs its worker held
    answer_seconds: float = 0.0  # sum of shards' answer_seconds (answer extraction and equivalence)
    reused_rows: int = 0  # input rows whose outputs came from the source version (`run --from`)
    reused_tokens: Tokens = Tokens()  # the manifest's tokens that were not generated by this run


class Reuse(Strict):
    """`run --from`: where a stage's reused outputs came from and how much was reused, or why nothing was.
    `mode`: "stage" (same fingerprint: every file taken and verified), "rows" (rows whose own input and the
    stage's model recipe are unchanged), "none" (recomputed: `reason` says why)."""

    source: str  # as given: a run directory, STORE@REV or ORG/NAME@REV
    revision: str | None = None
    commit: str | None = None
    mode: Literal["stage", "rows", "none"]
    reason: str | None = None
    shards: int = 0  # shards taken whole
    rows: int = 0  # input rows reused
    computed: int = 0  # input rows computed


class ManifestExecution(Strict):
    environments: dict[str, dict[str, Any]] = Field(default_factory=dict)  # id -> environment (shards share a few)
    shards: list[ShardExecution] = Field(default_factory=list)
    cost: Cost = Cost()
    reuse: Reuse | None = None  # `run --from`: what was reused, from which version

    def engines(self) -> dict[str, dict[str, Any]]:
        """Every engine any shard used, by model id (the last shard's info where they differ)."""
        out: dict[str, dict[str, Any]] = {}
        for shard in self.shards:
            out.update(shard.engines)
        return dict(sorted(out.items()))


class Manifest(Strict):
    format: Literal[2] = 2
    stage: str
    description: str
    fingerprint: str
    preset: str | None = None
    recipe: Recipe
    shards: list[ManifestShard]
    counts: Counts
    tokens: Tokens
    content: str  # digest over every shard's content digest, split by split
    report: dict[str, Any] | None = None  # what the stage's whole-input pass found (Stage.summarize)
    execution: ManifestExecution = ManifestExecution()

    def identity(self) -> dict[str, Any]:
        """What defines the data (the recipe and its result), without how it was executed, where its input
        was published, or what wrote the files: equal identities mean the same data."""
        data = self.model_dump(mode="json", exclude={"execution", "description", "preset"})
        if data["recipe"]["input"]:
            data["recipe"]["input"] = {k: v for k, v in data["recipe"]["input"].items() if k not in ("revision", "commit")}
        for shard in data["shards"]:
            shard["files"] = {split: {k: f[k] for k in ("file", "rows", "content")} for split, f in shard["files"].items()}
        return data

    def files(self) -> dict[str, FileRecord]:
        """Every file of the stage by name (train and dropped)."""
        return {f.file: f for s in self.shards for f in s.files.values()}

    def split_files(self, split: str) -> list[FileRecord]:
        return [s.files[split] for s in self.shards if split in s.files]

    def splits(self) -> list[str]:
        return sorted({split for s in self.shards for split in s.files}, key=lambda x: (x != "train", x))

    def rows(self, split: str = "train") -> int:
        return sum(f.rows for f in self.split_files(split))


def stage_content(shards: list[ManifestShard] | list[ShardRecord]) -> str:
    """One digest for a stage's rows: its shards' content digests, in shard order, split by split."""
    h = hashlib.sha256()
    for shard in shards:
        for split in sorted(shard.files):
            h.update(f"{shard.index}\0{split}\0{shard.files[split].content}\n".encode())
    return "sha256:" + h.hexdigest()


def execution_differences(a: Manifest, b: Manifest) -> list[str]:
    """What differs between two executions of a stage: execution fields, shard indices folded away and
    environments resolved ("environment.libraries.torch", "engines.<model>.device", "host", "seconds"), and the
    files' writers and hashes ("files.writer", "files.sha256")."""
    from ..recipe.params import flatten

    def view(m: Manifest) -> dict[str, Any]:
        shards = {str(s.index): {**s.model_dump(exclude={"environment", "index"}),
                                 "environment": m.execution.environments.get(s.environment, {})}
                  for s in m.execution.shards}
        files = m.files().values()
        return {"shards": shards, "cost": m.execution.cost.model_dump(),
                "files": {"writer": sorted({f.writer or "?" for f in files}), "sha256": sorted(f.sha256 for f in files)}}

    fa, fb = flatten(view(a)), flatten(view(b))
    return sorted({_fold(k) for k in set(fa) | set(fb) if fa.get(k) != fb.get(k)})


# Execution fields that differ between any two runs, even on one machine: not a different environment.
RUN_NOISE = ("seconds", "started", "pid", "cost.plan_seconds", "cost.wall_seconds", "cost.worker_seconds", "cost.gpu_seconds",
             "answer_seconds", "cost.answer_seconds",
             "files.sha256",
             # `run --from`: how much was reused says how this run went, not where (the manifest's `reuse` says it)
             "reused_rows", "reused_shard", "reused_tokens.prompt", "reused_tokens.completion", "cost.reused_rows",
             "cost.reused_tokens.prompt", "cost.reused_tokens.completion")


def environment_differences(a: Manifest, b: Manifest) -> list[str]:
    """`execution_differences` without the fields every run changes (timings, process ids, file hashes)."""
    return [f for f in execution_differences(a, b) if f not in RUN_NOISE]


def _fold(key: str) -> str:
    """shards.3.environment.libraries.torch -> environment.libraries.torch (a field, whichever shard)."""
    parts = key.split(".")
    if parts[0] == "shards" and len(parts) > 2 and parts[1].isdigit():
        parts = parts[2:]
    return ".".join(parts)


# ---------------------------------------------------------------------------------------------- JSON


def parse(model: type[Model], data: bytes | str | dict[str, Any], source: str) -> Model:
    """Validate a record strictly; a bad one is a ConfigError naming the source and each bad field."""
    import json

    try:
        if isinstance(data, (bytes, str)):
            data = json.loads(data)
        return model.model_validate(data)
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}" for e in exc.errors()[:8])
        else:
            problems = f"not JSON ({exc})"
        raise ConfigError(f"{source} is not a valid {model.__name__.lower()} record: {problems}") from None


def read(model: type[Model], path: Path | UrlPath) -> Model:
    from .urlpath import as_path

    try:
        blob = as_path(path).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist") from None
    return parse(model, blob, str(path))


def write(path: Path | UrlPath, record: BaseModel) -> None:
    from .files import write_json

    write_json(path, record.model_dump(mode="json"))


def to_bytes(record: BaseModel) -> bytes:
    """The exact bytes `write` puts on disk (what a store commits)."""
    from .files import json_bytes

    return json_bytes(record.model_dump(mode="json"))
