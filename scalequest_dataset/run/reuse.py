"""`run --from`, the worker's side: a stage's staged reuse (`state/<stage>/reuse.json`, `prior.parquet`), read once
per process, and a shard computed with it: the engine on the rows whose input changed, `Stage.rebuild` on the
others. The driver's side (what a stage takes from SOURCE, and why) is derive.py."""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from ..recipe.params import Strict
from ..stages import STAGES, ShardResult, Stage, StageContext
from . import records
from .layout import RunLayout
from .records import FileRecord, Reuse, Tokens

SPLIT = "__split"  # prior.parquet: which split of the source a row was in


class Staged(Strict):
    """state/<stage>/reuse.json: the stage's reuse (its manifest's `execution.reuse`) and the staged files."""

    reuse: Reuse
    prior: FileRecord | None = None
    keys: FileRecord | None = None



class Prior:
    """A stage's staged reuse as a worker reads it: input key -> the source's output rows for it."""

    def __init__(self, layout: RunLayout, stage: str, staged: Staged) -> None:
        from .plan import check_file

        assert staged.prior is not None and staged.keys is not None
        check_file(layout.prior(stage), staged.prior, f"the reused rows of stage {stage!r}")
        check_file(layout.prior_keys(stage), staged.keys, f"the reused keys of stage {stage!r}")
        self.keys = set(pq.read_table(layout.prior_keys(stage)).column("key").to_pylist())
        self.rows: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        self.origin = STAGES[stage].origin
        for row in pq.read_table(layout.prior(stage)).to_pylist():
            split = row.pop(SPLIT)
            self.rows.setdefault(row[self.origin], []).append((split, row))

    @classmethod
    def load(cls, layout: RunLayout, stage: str) -> Prior | None:
        path = layout.reuse(stage)
        if not path.is_file():
            return None
        staged = records.read(Staged, path)
        if staged.reuse.mode != "rows" or staged.prior is None:
            return None
        key = (str(layout.prior(stage)), staged.prior.sha256)  # a worker reads it once, not once per shard
        if key not in _LOADED:
            _LOADED.clear()
            _LOADED[key] = cls(layout, stage, staged)
        return _LOADED[key]


_LOADED: dict[tuple[str, str], Prior] = {}


class NotInvariant(RuntimeError):
    """The engine a shard used says a row's result depends on its batch-mates: reused rows would not be the run
    from scratch's, so the shard is computed whole."""


def process_with_prior(stage: Stage, rows: list[dict[str, Any]], ctx: StageContext, prior: Prior
                       ) -> tuple[ShardResult, int, Tokens]:
    """The shard's result: the engine on the rows whose input changed, `rebuild` on the others. Returns the
    result (as `process` on every row would give it), the input rows reused and their tokens."""
    key = stage.group_key or "id"
    fresh = [r for r in rows if r[key] not in prior.keys]
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r[key] in prior.keys:
            groups.setdefault(r[key], []).append(r)
    result = stage.process(fresh, ctx) if fresh else ShardResult([])
    if groups and any(not info.batch_invariant for info in ctx.engines_used.values()):
        raise NotInvariant(", ".join(sorted(ctx.engines_used)))
    reused = Tokens()
    for k, members in groups.items():
        part = stage.rebuild(members, prior.rows.get(k, []))
        result.rows += part.rows
        result.dropped += part.dropped
        result.tokens += part.tokens
        result.prompt_tokens += part.prompt_tokens
        reused += Tokens(prompt=part.prompt_tokens, completion=part.tokens)
    reused_rows = sum(len(m) for m in groups.values())
    ctx.report(reused_rows)
    return result, reused_rows, reused
