"""Building a version on a version: `scalequest run --from SOURCE --out DIR [--set KEY=VALUE ...]`.

The config is SOURCE's (as its manifests record it) changed by `--set`; the result is the run from scratch with
that config, byte for byte, computing only what changed. Before a stage's shards run, the driver stages what the
stage takes from SOURCE (`stage_from_source`):

- the stage's fingerprint equals SOURCE's: every file is fetched, verified (size, sha256, and the content digest
  recomputed from its rows) and written with the record a worker would have written: no engine call;
- else, where the stage's outputs for a row (a group, with `group_key`) depend on that row alone (`row_local`),
  its model recipe (`Stage.model_recipe`: everything but the input and the rules `rebuild` re-applies) is
  unchanged, and the engine gives a row the same result whatever its batch-mates (or the stage's input and shard
  cut are SOURCE's, so its engine calls would be too: only a rule changed): the source's outputs of the
  rows whose own input values are unchanged go to `state/<stage>/prior.parquet`; a worker takes them from there
  (`Stage.rebuild`) and runs the engine on the other rows only;
- else the stage is recomputed, and `reuse.json` says why.

SOURCE is untrusted input: a file whose bytes or rows disagree with its manifest stops the run (nothing of it is
reused), and a file name that is not a shard name is refused before any path is made from it."""

from __future__ import annotations

import copy
import hashlib
import os
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..recipe.config import RunConfig, apply_override, build_config
from ..recipe.params import ConfigError, canonical_json, flatten
from ..stages import STAGE_ORDER, STAGES, Stage
from . import records
from .files import arrow_schema, write_bytes, write_table
from .layout import RunLayout, shard_name
from .records import Execution, FileRecord, Manifest, Plan, Reuse, ShardRecord, stage_content
from .reuse import SPLIT, Staged

if TYPE_CHECKING:
    from ..revisions.locator import Source

_SHARD_FILE = re.compile(r"^(train|dropped)-\d{5}-of-\d{5}\.parquet$")


class SourceMismatch(ConfigError):
    """SOURCE's bytes or rows disagree with its own manifests: nothing of it may be reused."""


# ---------------------------------------------------------------------------------------------- the config


def source_config(source: Source, overrides: list[str] | None = None, engine: str | None = None) -> RunConfig:
    """SOURCE's config as its last complete stage's manifest records it (every stage up to it), changed by
    `overrides` (`--set`). Throughput knobs are not recorded: they take their defaults unless set."""
    manifests = source.manifests()
    if not manifests:
        raise ConfigError(f"{source.label} holds no complete stage to build on")
    last = manifests[[s for s in STAGE_ORDER if s in manifests][-1]]
    data: dict[str, Any] = copy.deepcopy(last.recipe.config)
    data["preset"] = last.preset or "custom"
    for assignment in overrides or []:
        apply_override(data, assignment)
    if engine:
        apply_override(data, f"engine.name={engine}")
    return build_config(data, f"config of {source.label} (its manifests, with --set)")


# ---------------------------------------------------------------------------------------------- staging (driver)


def stage_from_source(layout: RunLayout, config: RunConfig, plan: Plan, source: Source) -> Staged:
    """What stage `plan.stage` takes from SOURCE, staged in the run directory (once: a resumed run finds it)."""
    path = layout.reuse(plan.stage)
    if path.is_file():
        return records.read(Staged, path)
    origin = {"source": source.label, "revision": getattr(source, "revision", None),
              "commit": getattr(source, "commit", None)}
    staged = _stage(layout, config, plan, source, origin)
    records.write(path, staged)
    return staged


def _stage(layout: RunLayout, config: RunConfig, plan: Plan, source: Source, origin: dict[str, Any]) -> Staged:
    name = plan.stage
    theirs = source.manifests().get(name)
    if theirs is None:
        return Staged(reuse=Reuse(**origin, mode="none", reason=f"{source.label} has no stage {name!r}"))
    _check_manifest(source, theirs)
    if theirs.fingerprint == plan.fingerprint:
        if [s.rows_in for s in theirs.shards] == [s.rows for s in plan.shards]:
            _take_stage(layout, plan, source, theirs)
            return Staged(reuse=Reuse(**origin, mode="stage"))
    reason = _why_not_rows(config, plan, source, theirs)
    if reason is not None:
        return Staged(reuse=Reuse(**origin, mode="none", reason=reason))
    stage = STAGES[name](config)
    keys = _unchanged_keys(layout, stage, plan, source, theirs)
    prior = [(split, row) for split, row in _rows(source, theirs, theirs.splits()) if row[stage.origin] in keys]
    table = pa.Table.from_pylist([{**row, SPLIT: split} for split, row in prior],
                                 schema=arrow_schema(stage.features).append(pa.field(SPLIT, pa.string())))
    return Staged(reuse=Reuse(**origin, mode="rows"),
                  prior=FileRecord(**write_table(layout.prior(name), table)),
                  keys=FileRecord(**write_table(layout.prior_keys(name), pa.table({"key": sorted(keys)}))))


def _why_not_rows(config: RunConfig, plan: Plan, source: Source, theirs: Manifest) -> str | None:
    """Why the stage cannot take rows from SOURCE (None: it can)."""
    stage = STAGES[plan.stage](config)
    mine = stage.model_recipe({r: m.model_dump() for r, m in plan.models.items()})
    try:
        their_config = build_config({**theirs.recipe.config, "preset": theirs.preset or "custom"},
                                    f"{source.label} manifests/{plan.stage}.json")
    except ConfigError as exc:
        return f"its recorded config does not read as this version's ({exc})"
    recipe = STAGES[plan.stage](their_config).model_recipe({r: m.model_dump() for r, m in theirs.recipe.models.items()})
    if mine != recipe:
        a, b = flatten(recipe), flatten(mine)
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return f"its own recipe changed ({', '.join(changed[:4])}): recomputed whole"
    if not stage.row_local:
        return "a row's outcome depends on every other row of the input: recomputed whole"
    if stage.model_specs() and not _same_calls(plan, theirs):
        problem = batch_invariance_problem(config)
        if problem:
            return f"a row's output depends on its batch-mates here ({problem}): recomputed whole"
    if plan.input is not None:
        given = source.manifests().get(plan.input.stage)
        if given is None or theirs.recipe.input is None or theirs.recipe.input.content != given.content:
            return f"{source.label} holds no input stage {plan.input.stage!r} that its stage {plan.stage!r} was built on"
    return None


def _same_calls(plan: Plan, theirs: Manifest) -> bool:
    """The stage would make SOURCE's engine calls again, request for request and batch for batch: the same input
    (content digest) cut into the same shards, with the same model recipe (checked before). Only the stage's
    rules changed (difficulty's keep table, solvability's rule): its recorded outputs are what the engine gives
    again, batch-mates and all, whether or not it is batch-invariant, so a rule change never re-runs a model."""
    return (plan.input is not None and theirs.recipe.input is not None
            and plan.input.content == theirs.recipe.input.content
            and [s.rows_in for s in theirs.shards] == [s.rows for s in plan.shards])


def batch_invariance_problem(config: RunConfig, platform=None) -> str | None:
    """Why the configured engine may give a row another result with other batch-mates (None: it does not).
    The transformers engine is batch-invariant by construction; vLLM only in its batch-invariant mode on a GPU
    that supports it, and with CUDA graphs only where that is shown (README: Determinism). `platform`: vLLM's
    `current_platform` (the default) or a stand-in."""
    if config.engine.name == "transformers":
        return None
    if config.engine.name == "vllm":
        from ..engines.vllm import batch_invariance_support, decide_eager

        if os.environ.get("VLLM_BATCH_INVARIANT") == "0":
            return "VLLM_BATCH_INVARIANT=0"
        problem = batch_invariance_support(platform)
        if problem is None:
            problem = decide_eager(config.engine.vllm.enforce_eager, True, platform)[1]
        return None if problem is None else f"vLLM's batch-invariant mode is not available: {problem}"
    return f"engine {config.engine.name!r} does not promise batch invariance"


def _unchanged_keys(layout: RunLayout, stage: Stage, plan: Plan, source: Source, theirs: Manifest) -> set[str]:
    """The input rows (groups) whose values equal those SOURCE's stage read: their outputs may be reused. A
    stage without an input (questions) reads only a row's id: every id SOURCE made is unchanged."""
    if plan.input is None:
        return {row[stage.origin] for _, row in _rows(source, theirs, theirs.splits())}
    key = stage.group_key or "id"
    given = source.manifests()[plan.input.stage]
    before = _group_digests((row for _, row in _rows(source, given, ["train"])), key)
    mine = records.read(Manifest, layout.manifest(plan.input.stage))
    now = _group_digests((row for path in _local_files(layout, mine) for row in pq.read_table(path).to_pylist()), key)
    return {k for k, digest in before.items() if now.get(k) == digest}


def _group_digests(rows: Any, key: str) -> dict[str, str]:
    """key -> a digest of every value of the rows sharing it (sorted by id)."""
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(canonical_json(row))
    return {k: hashlib.sha256("\n".join(sorted(v)).encode("utf-8")).hexdigest() for k, v in groups.items()}


def _local_files(layout: RunLayout, manifest: Manifest) -> list[Path]:
    from .plan import verified_inputs

    return verified_inputs(layout, manifest)


def _take_stage(layout: RunLayout, plan: Plan, source: Source, theirs: Manifest) -> None:
    """Every shard of SOURCE's stage (same fingerprint), fetched, verified and recorded as taken."""
    from .worker import environment, verified_record

    total = len(plan.shards)
    made_by = {e.index: e for e in theirs.execution.shards}  # the bytes' provenance (informational, decides nothing)
    for shard in theirs.shards:
        if verified_record(layout, plan, shard.index) is not None:
            continue
        started_at, started = datetime.now(timezone.utc), time.perf_counter()
        for split, info in shard.files.items():
            if info.file != shard_name(split, shard.index, total):
                raise SourceMismatch(f"{source.label}: manifests/{plan.stage}.json names {info.file!r} for shard "
                                     f"{shard.index} of {total} ({split}), not {shard_name(split, shard.index, total)!r}")
            write_bytes(layout.data_dir(plan.stage) / info.file, fetch_verified(source, plan.stage, info).read_bytes())
        origin = made_by.get(shard.index)
        records.write(layout.record(plan.stage, shard.index), ShardRecord(
            stage=plan.stage, index=shard.index, fingerprint=plan.fingerprint, rows_in=shard.rows_in,
            files=shard.files, drops=shard.drops, tokens=shard.tokens,
            execution=Execution(
                seconds=round(time.perf_counter() - started, 3), started=started_at.isoformat(timespec="seconds"),
                host=socket.gethostname(), worker="taken-from-source", pid=os.getpid(), reused_rows=shard.rows_in,
                reused_tokens=shard.tokens, reused_shard=True,
                # what made these bytes (the source's engines and environment), not the copy
                engines=origin.engines if origin else {},
                environment=theirs.execution.environments.get(origin.environment, {}) if origin else environment())))


# ---------------------------------------------------------------------------------------------- SOURCE's bytes


def fetch_verified(source: Source, stage: str, info: FileRecord) -> Path:
    """A local copy of one of SOURCE's files, checked before use (the locator's one fetch-and-verify: a safe
    path, the manifest's size and sha256, its rows' content digest recomputed), and named as a shard."""
    from ..revisions.stores import VerificationError

    if not _SHARD_FILE.match(info.file):
        raise SourceMismatch(f"{source.label}: manifests/{stage}.json names a file {info.file!r}, not a shard")
    try:
        return source.file(stage, info).path
    except VerificationError as exc:  # UnsafeRevision too: a path outside the stage
        raise SourceMismatch(f"{exc}; nothing of it is reused") from None


def _check_manifest(source: Source, manifest: Manifest) -> None:
    """A manifest's stage digest is its shards' digests (a shard list edited without it is caught)."""
    if stage_content(manifest.shards) != manifest.content:
        raise SourceMismatch(f"{source.label}: manifests/{manifest.stage}.json: its shards do not add up to its "
                             f"content digest {manifest.content}")


def _rows(source: Source, manifest: Manifest, splits: list[str]) -> Any:
    """(split, row) for every row of `splits` of SOURCE's stage, each file verified before it is read."""
    for shard in manifest.shards:
        for split in splits:
            info = shard.files.get(split)
            if info is not None and info.rows:
                for row in pq.read_table(fetch_verified(source, manifest.stage, info)).to_pylist():
                    yield split, row
