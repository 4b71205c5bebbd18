"""Finalizing a stage: once every shard of its plan is complete and verified, its manifest is written - and
only rewritten if its bytes would change, so a no-op re-run leaves every file of a run directory as it was.
`scalequest finalize RUN` does this for every planned stage (the step after a Slurm array)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..recipe.config import RunConfig
from ..recipe.params import canonical_json
from ..stages import STAGES
from . import records
from .layout import RunLayout
from .plan import read_plan
from .records import (
    Cost,
    Counts,
    Manifest,
    ManifestExecution,
    ManifestShard,
    Plan,
    Recipe,
    ShardExecution,
    ShardRecord,
    Tokens,
    stage_content,
)
from .worker import verified_record


@dataclass
class StageState:
    """What `status` reports of one stage (read-only: nothing is written to find it out)."""

    stage: str
    shards: int | None  # None: not planned yet
    done: list[int]
    rows: int
    complete: bool
    fingerprint: str | None = None

    @property
    def missing(self) -> list[int]:
        return sorted(set(range(self.shards or 0)) - set(self.done))


def stage_state(layout: RunLayout, name: str) -> StageState:
    plan = read_plan(layout, name)
    if plan is None:
        return StageState(name, None, [], 0, False)
    recs = [verified_record(layout, plan, s.index) for s in plan.shards]
    done = [r for r in recs if r is not None]
    return StageState(name, len(plan.shards), [r.index for r in done], sum(r.files["train"].rows for r in done),
                      len(done) == len(plan.shards) and layout.manifest(name).is_file(), plan.fingerprint)


def finalize_stage(layout: RunLayout, config: RunConfig, name: str) -> Manifest | None:
    """Write the stage's manifest if every shard is complete and verified; None if some are not."""
    plan = read_plan(layout, name)
    if plan is None:
        return None
    recs = [verified_record(layout, plan, s.index) for s in plan.shards]
    if any(r is None for r in recs):
        return None
    report = None
    if plan.prepared is not None:
        from .files import read_table

        report = STAGES[name].summarize(read_table(layout.prepared(name)))
    manifest = build_manifest(config, plan, recs, report)  # type: ignore[arg-type]
    if layout.reuse(name).is_file():
        manifest = _with_reuse(manifest, layout, name, recs)  # type: ignore[arg-type]
    blob = records.to_bytes(manifest)
    path = layout.manifest(name)
    if not path.is_file() or path.read_bytes() != blob:
        from .files import write_bytes

        write_bytes(path, blob)
    return manifest


def build_manifest(config: RunConfig, plan: Plan, recs: list[ShardRecord], report: dict | None = None) -> Manifest:
    stage = STAGES[plan.stage](config)
    payload = stage.config_payload(config.input_of(plan.stage))
    drops: dict[str, int] = {}
    for r in recs:
        for reason, n in r.drops.items():
            drops[reason] = drops.get(reason, 0) + n
    shards = [ManifestShard(index=r.index, rows_in=r.rows_in, files=r.files, drops=r.drops, tokens=r.tokens)
              for r in recs]
    return Manifest(
        stage=plan.stage, description=stage.description, fingerprint=plan.fingerprint, preset=config.preset,
        recipe=Recipe(seed=config.seed, code_version=stage.version, config=config.recipe(plan.stage), params=payload["params"],
                      prompts=payload["prompts"], models=plan.models, engine=payload["engine"], input=plan.input),
        shards=shards,
        counts=Counts(rows_in=sum(r.rows_in for r in recs), rows_out=sum(r.files["train"].rows for r in recs),
                      dropped=dict(sorted(drops.items()))),
        tokens=sum((r.tokens for r in recs), Tokens()),
        content=stage_content(shards), report=report,
        execution=_execution(recs, plan.seconds))


def _with_reuse(manifest: Manifest, layout: RunLayout, name: str, recs: list[ShardRecord]) -> Manifest:
    """`run --from`: the stage's execution says what was taken from which version and what was computed."""
    from .reuse import Staged

    reuse = records.read(Staged, layout.reuse(name)).reuse
    rows = sum(r.execution.reused_rows for r in recs)
    reuse = reuse.model_copy(update={"shards": sum(r.execution.reused_shard for r in recs), "rows": rows,
                                     "computed": manifest.counts.rows_in - rows})
    return manifest.model_copy(update={"execution": manifest.execution.model_copy(update={"reuse": reuse})})


def _execution(recs: list[ShardRecord], plan_seconds: float = 0.0) -> ManifestExecution:
    """Per-shard executions, with their (few distinct) environments stored once, and the stage's cost."""
    from datetime import datetime

    environments: dict[str, dict] = {}
    shards = []
    spans = []
    for r in recs:
        env = r.execution.environment
        key = hashlib.sha256(canonical_json(env).encode()).hexdigest()[:12]
        environments[key] = env
        shards.append(ShardExecution(index=r.index, environment=key,
                                     **r.execution.model_dump(exclude={"environment", "stamps"})))
        start = datetime.fromisoformat(r.execution.started).timestamp()
        spans.append((start, start + r.execution.seconds))
    return ManifestExecution(
        environments=dict(sorted(environments.items())), shards=shards,
        cost=Cost(plan_seconds=plan_seconds, wall_seconds=round(_covered(spans), 3),
                  worker_seconds=round(sum(r.execution.seconds for r in recs), 3),
                  gpu_seconds=round(sum(r.execution.seconds * r.execution.gpus for r in recs), 3),
                  answer_seconds=round(sum(r.execution.answer_seconds for r in recs), 6),
                  reused_rows=sum(r.execution.reused_rows for r in recs),
                  reused_tokens=sum((r.execution.reused_tokens for r in recs), Tokens())))


def _covered(spans: list[tuple[float, float]]) -> float:
    """Seconds during which at least one shard was running (a stage resumed next day does not count the night)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total
