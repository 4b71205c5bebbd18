"""Why rows changed between two versions, for a version built on another (`run --from`): the recipe fields that
changed, first stage first, and per changed stage how many rows changed because their own input changed and how
many because the stage's own recipe changed.

A stage whose own recipe is the same on both sides changed only through its input: every changed row counts
there. In a stage whose own recipe changed, an output row (matched by id) counts under "input" when the input row
or group it came from (`Stage.origin`) differs between the sides, else under "recipe".

Both counts come from the diff's own exact comparison (the ids of rows added, removed or changed, in any split,
with their origin), so no row is read twice or turned into Python objects."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..run.records import Manifest

OWN_EXCLUDED = ("fingerprint", "input.")  # fields that differ because the input did


def own_changes(why: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The stage's own recipe fields that differ (not its input's identity). A field the run config repeats
    (`config.seed` beside `seed`) is named once, by its stage-level name, when there is one."""
    own = [w for w in why if not w["field"].startswith(OWN_EXCLUDED)]
    named = [w for w in own if not w["field"].startswith("config.")]
    return named or own


def attribute(stage: str, ma: Manifest, mb: Manifest, own: bool, flagged, keyed: Callable[..., Any]
              ) -> dict[str, int]:
    """{"input": rows changed because their input changed, "recipe": rows changed by the stage's own recipe}:
    output rows (train and dropped) added, removed or changed, matched by id. `flagged`: the diff's table of those
    rows' lineage columns (a row moved between splits appears twice: counted once); `keyed(stage)`: the diff's
    comparison of another stage's `train` rows, with the same table (None when a side lacks that stage)."""
    import pyarrow.compute as pc

    ids = flagged.column("id")
    first = pc.index_in(pc.unique(ids), value_set=ids)  # each id once, as it was first seen
    if not own:
        return {"input": len(first), "recipe": 0}
    source_stage = ma.recipe.input.stage if ma.recipe.input else None
    if source_stage is None or mb.recipe.input is None or mb.recipe.input.stage != source_stage:
        return {"input": 0, "recipe": len(first)}
    from ..stages import STAGES

    found = keyed(source_stage)
    if found is None or not len(first):
        return {"input": 0, "recipe": len(first)}
    origins = flagged.column(STAGES[stage].origin).take(first)
    key = STAGES[stage].group_key or "id"
    if key not in found.flagged.column_names:  # no input row changed
        return {"input": 0, "recipe": len(first)}
    changed_groups = pc.unique(found.flagged.column(key))
    if changed_groups.type != origins.type:
        changed_groups = changed_groups.cast(origins.type)
    by_input = int(pc.sum(pc.is_in(origins, value_set=changed_groups)).as_py() or 0)
    return {"input": by_input, "recipe": len(first) - by_input}
