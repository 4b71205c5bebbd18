"""Planning a stage: everything a shard needs, resolved once and persisted in the run directory, so that a
worker on another node (or a resume next week) needs nothing but the run directory:

- the fingerprint, from the config, the pinned models and the input's fingerprint and content digest;
- the models pinned to the weights they mean now (model_identity.py): every worker loads the same ones;
- the shard plan: fixed ranges of the input's rows (never splitting a `group_key` group), or the source's
  own descriptors; it depends only on the input and `rows_per_shard`, never on workers or batch size;
- the stage's whole-input pass (dedup's index), written next to the plan.

A plan is written once (the first writer wins, so concurrent Slurm tasks agree) and never rewritten. The
config a run directory holds is adopted here too: a config that contradicts a planned stage is refused before
anything is written."""

from __future__ import annotations

import itertools
import os
import socket
import time
from pathlib import Path

from ..engines import loads_models
from ..recipe.config import RunConfig, build_config, load_preset
from ..recipe.model_identity import ResolvedModel, locate_model
from ..recipe.params import ConfigError, fingerprint, flatten
from ..stages import STAGES, Stage
from . import records
from .files import file_problem, iter_batches, read_table, unchanged, write_bytes, write_table
from .layout import RunLayout
from .prepare import prepare_input
from .records import FileRecord, InputRef, Manifest, PinnedModel, Plan, ShardRecord, ShardSpec
from .urlpath import UrlPath


class StageError(RuntimeError):
    """A stage cannot run or finish as asked (input missing, another config, a shard failed)."""


class ShardFailed(StageError):
    """A shard's code raised or its worker died: not the user's input but a failure (the CLI's exit code 3)."""


def load_config(layout: RunLayout) -> RunConfig:
    layout.require()
    return build_config(load_preset(str(layout.config)), f"config {layout.config}")


def adopt_config(layout: RunLayout, config: RunConfig) -> list[str]:
    """Make `config` the run directory's config, or refuse with nothing written. Throughput knobs (batch size,
    worker count) may differ from the saved config; what defines data may differ only for stages not planned
    yet. Returns notes for the user (empty when nothing changed)."""
    if not layout.config.exists():
        layout.root.mkdir(parents=True, exist_ok=True)
        write_bytes(layout.config, config.yaml().encode("utf-8"))
        return []
    saved = load_config(layout)
    if saved.recipe() == config.recipe():
        return []
    conflicts = []
    for name in saved.stage_names():
        plan = read_plan(layout, name)
        if plan is None:
            continue
        if name not in config.stage_names():
            conflicts.append(f"stage {name!r} is planned here but not in this config")
        elif plan.config != config_key(config, name):
            conflicts.append(f"stage {name!r} was planned with another config ({_differences(saved, config, name)})")
    if conflicts:
        raise ConfigError(f"{layout.root} holds another config: " + "; ".join(conflicts)
                          + ". Use a new --out directory (nothing was changed here)")
    write_bytes(layout.config, config.yaml().encode("utf-8"))
    changed = [n for n in config.stage_names() if read_plan(layout, n) is None
               and (n not in saved.stage_names() or config_key(saved, n) != config_key(config, n))]
    return [f"config.yaml updated: stages not run yet take the new settings ({', '.join(changed) or 'none'})"]


def _differences(a: RunConfig, b: RunConfig, stage: str) -> str:
    fa, fb = flatten(a.recipe()), flatten(b.recipe())
    keys = [k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)
            and (not k.startswith("stages.") or k.startswith(f"stages.{stage}."))]
    return ", ".join(f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in keys[:5]) or "its input"


def config_key(config: RunConfig, name: str) -> str:
    return fingerprint(STAGES[name](config).config_payload(config.input_of(name)))


def read_plan(layout: RunLayout, name: str) -> Plan | None:
    path = layout.plan(name)
    return records.read(Plan, path) if path.is_file() else None


def read_manifest(layout: RunLayout, name: str) -> Manifest | None:
    path = layout.manifest(name)
    return records.read(Manifest, path) if path.is_file() else None


def plan_stage(layout: RunLayout, config: RunConfig, name: str, pinned: dict[str, PinnedModel] | None = None,
               processes: int = 1) -> Plan:
    """The stage's plan: the persisted one (checked against this config and the input), or a new one. `pinned`
    (regenerate) fixes the models to the identities a manifest recorded instead of resolving them now.
    `processes`: how many the whole-input pass may use (run/prepare.py; the same table whatever the number)."""
    started = time.process_time()
    key = config_key(config, name)
    input_stage = config.input_of(name)
    input_manifest = None
    if input_stage is not None:
        input_manifest = read_manifest(layout, input_stage)
        if input_manifest is None:
            raise StageError(f"stage {name!r} needs its input stage {input_stage!r}, which is not complete in "
                             f"{layout.root}: run `--stage {input_stage}` first")
    input_ref = InputRef(stage=input_stage, fingerprint=input_manifest.fingerprint,
                         content=input_manifest.content) if input_manifest else None
    plan = read_plan(layout, name)
    if plan is not None:
        if plan.config != key:
            raise StageError(f"{layout.root} already holds stage {name!r} made with another config; use a new "
                             "--out directory")
        if plan.input != input_ref:
            raise StageError(
                f"stage {name!r} in {layout.root} was built on input {input_stage!r} with content "
                f"{plan.input.content if plan.input else None}, which now has {input_ref.content if input_ref else None} "
                f"(an input shard was redone with other bytes): remove {layout.state_dir(name)} and "
                f"{layout.data_dir(name)} to rebuild it on the new input")
        return plan
    located = None
    if pinned is not None:
        load = loads_models(config.engine.name)
        located = {role: locate_model(m.id, m.revision, f"stages.{name} ({role})", load=load)
                   for role, m in pinned.items()}
    stage = STAGES[name](config, located)
    models = {role: PinnedModel(**m.identity()) for role, m in stage.models().items()}
    input_paths = verified_inputs(layout, input_manifest) if input_manifest else []
    if input_manifest is None:
        shards = [ShardSpec(index=i, rows=src["rows"], source=src) for i, src in enumerate(stage.source_plan())]
    else:
        shards = _cut(stage, input_manifest, input_paths, config.rows_per_shard)
    prepared, elsewhere = None, 0.0
    if input_paths:
        rows = [shard.files["train"].rows for shard in input_manifest.shards if "train" in shard.files]
        table, elsewhere = prepare_input(stage, input_paths, rows, processes)
        if table is not None:
            prepared = FileRecord(**write_table(layout.prepared(name), table))
    identity = input_ref.model_dump(include={"stage", "fingerprint", "content"}) if input_ref else None
    plan = Plan(stage=name, fingerprint=stage.fingerprint(input_stage, identity),
                config=key, input=input_ref, models=models, shards=shards or [ShardSpec(index=0, rows=0)],
                prepared=prepared, seconds=round(time.process_time() - started + elsewhere, 3))
    return _write_once(layout.plan(name), plan)


def _write_once(path: Path | UrlPath, plan: Plan) -> Plan:
    """First writer wins: concurrent planners (Slurm array tasks) all end up with the same plan. A local file is
    linked into place (link fails if the name exists); an object is an exclusive create."""
    if isinstance(path, UrlPath):
        try:
            path.create(records.to_bytes(plan))
        except FileExistsError:
            return records.read(Plan, path)
        return plan
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_bytes(records.to_bytes(plan))
    try:
        os.link(tmp, path)
    except FileExistsError:
        return records.read(Plan, path)
    finally:
        tmp.unlink(missing_ok=True)
    return plan


def _cut(stage: Stage, manifest: Manifest, paths: list[Path | UrlPath], size: int) -> list[ShardSpec]:
    """The input's rows, in order, cut so that each shard writes about `size` output rows: runs of `size` input
    rows, a `group_key` group never split; a stage that writes one row per group (`default`) takes `size` groups
    (cut by input rows, its shards held a fifth of `size` rows: ~1,350 files of 0.5 MB at paper scale)."""
    total = manifest.rows("train")
    if stage.group_key is None:
        bounds = [*range(0, total, size), total]
    else:
        per_group = stage.one_row_per_group
        bounds, position, count, last = [0], 0, 0, None
        for batch in iter_batches(paths, [stage.group_key]):
            for key in batch.column(0).to_pylist():
                new_group = position == 0 or key != last
                if count >= size and new_group:
                    bounds.append(position)
                    count = 0
                count += 1 if new_group or not per_group else 0
                position, last = position + 1, key
        bounds.append(total)
    return [ShardSpec(index=i, start=a, stop=b, rows=b - a)
            for i, (a, b) in enumerate(itertools.pairwise(bounds)) if b > a or total == 0]


def verified_inputs(layout: RunLayout, manifest: Manifest) -> list[Path | UrlPath]:
    """The input stage's `train` files, each checked against its manifest (size and sha256), unless this run wrote
    it on this host and nobody touched it since (worker.written_here: the sha256 computed as it was written)."""
    paths = []
    for position, shard in enumerate(manifest.shards):
        info = shard.files.get("train")
        if info is None:
            continue
        path = layout.data_dir(manifest.stage) / info.file
        record = input_record(layout, manifest, position)
        if record is None or not written_here(record, "train", path):
            check_file(path, info, f"input stage {manifest.stage!r}")
        paths.append(path)
    return paths


def written_here(record: ShardRecord, split: str, path: Path | UrlPath) -> bool:
    """The file of `split` is the one the record's worker wrote and hashed, on this host, untouched since (its
    stamp): its recorded sha256 holds without reading it again. Any other file is hashed: one written on another
    machine, copied, touched, or read from a revision (publish, fetch, diff, load and regenerate always hash)."""
    return record.execution.host == socket.gethostname() and unchanged(path, record.execution.stamps.get(split))


def input_record(layout: RunLayout, manifest: Manifest, position: int) -> ShardRecord | None:
    """The shard record behind the input manifest's `position`-th shard, if it is still in the run directory."""
    shard = manifest.shards[position]
    try:
        record = records.read(ShardRecord, layout.record(manifest.stage, shard.index))
    except (ValueError, OSError):
        return None
    return record if record.fingerprint == manifest.fingerprint and record.files == shard.files else None


def check_file(path: Path | UrlPath, info: FileRecord, what: str) -> None:
    problem = file_problem(path, info.sha256)
    if problem:
        raise StageError(f"{path} ({what}) {problem}; re-run `scalequest run` to repair it")


def open_stage(layout: RunLayout, config: RunConfig, plan: Plan) -> Stage:
    """The stage as its plan pinned it: models located (and checked) on this machine, prepared state loaded."""
    load = loads_models(config.engine.name)
    models: dict[str, ResolvedModel] = {role: locate_model(m.id, m.revision, f"stages.{plan.stage} ({role})", load=load)
                                        for role, m in plan.models.items()}
    stage = STAGES[plan.stage](config, models)
    if plan.prepared is not None:
        path = layout.prepared(plan.stage)
        check_file(path, plan.prepared, f"the prepared state of stage {plan.stage!r}")
        stage.load_prepared(read_table(path))
    return stage
