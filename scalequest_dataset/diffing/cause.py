"""Why rows changed between two versions, for a version built on another (`run --from`): the recipe fields that
changed, first stage first, and per changed stage how many rows changed because their own input changed and how
many because the stage's own recipe changed.

A stage whose own recipe is the same on both sides changed only through its input: every changed row counts
there. In a stage whose own recipe changed, an output row (matched by id) counts under "input" when the input row
or group it came from (`Stage.origin`) differs between the sides, else under "recipe"."""

from __future__ import annotations

import hashlib
from typing import Any

import pyarrow.parquet as pq

from ..recipe.params import canonical_json
from ..revisions.locator import Source
from ..run.records import Manifest
from ..stages import STAGES

OWN_EXCLUDED = ("fingerprint", "input.")  # fields that differ because the input did


def own_changes(why: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stage's own recipe fields that differ (not its input's identity). A field the run config repeats
    (`config.seed` beside `seed`) is named once, by its stage-level name, when there is one."""
    own = [w for w in why if not w["field"].startswith(OWN_EXCLUDED)]
    named = [w for w in own if not w["field"].startswith("config.")]
    return named or own


def _rows(src: Source, manifest: Manifest, splits: list[str] | None = None) -> list[dict[str, Any]]:
    out = []
    for shard in manifest.shards:
        for split, info in shard.files.items():
            if (splits is None or split in splits) and info.rows:
                out.extend(pq.read_table(src.file(manifest.stage, info).path).to_pylist())
    return out


def _digest(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256("\n".join(sorted(canonical_json(r) for r in rows)).encode("utf-8")).hexdigest()


def _groups(rows: list[dict[str, Any]], key: str) -> dict[Any, str]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[key], []).append(row)
    return {k: _digest(v) for k, v in groups.items()}


def attribute(stage: str, src_a: Source, src_b: Source, ma: Manifest, mb: Manifest, own: bool) -> dict[str, int]:
    """{"input": rows changed because their input changed, "recipe": rows changed by the stage's own recipe}:
    output rows (train and dropped) added, removed or changed, matched by id."""
    rows_a = {r["id"]: r for r in _rows(src_a, ma)}
    rows_b = {r["id"]: r for r in _rows(src_b, mb)}
    changed = [i for i in rows_a.keys() | rows_b.keys()
               if i not in rows_a or i not in rows_b or canonical_json(rows_a[i]) != canonical_json(rows_b[i])]
    if not own:
        return {"input": len(changed), "recipe": 0}
    source_stage = ma.recipe.input.stage if ma.recipe.input else None
    if source_stage is None or mb.recipe.input is None or mb.recipe.input.stage != source_stage:
        return {"input": 0, "recipe": len(changed)}
    cls = STAGES[stage]
    key = cls.group_key or "id"
    inputs_a = _groups(_rows(src_a, src_a.manifests()[source_stage], ["train"]), key)
    inputs_b = _groups(_rows(src_b, src_b.manifests()[source_stage], ["train"]), key)
    counts = {"input": 0, "recipe": 0}
    for i in changed:
        origin = (rows_a.get(i) or rows_b[i])[cls.origin]
        counts["input" if inputs_a.get(origin) != inputs_b.get(origin) else "recipe"] += 1
    return counts
