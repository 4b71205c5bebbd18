"""The dataset card rendered into every published revision's README.md: YAML `configs:` for every stage
present (so `load_dataset(repo, stage)` finds its files), the funnel, lineage, and the rules we chose."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from ..run.records import Manifest
from ..stages import STAGE_ORDER, STAGES
from .stores.base import RepoLayout


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
        data_files = [{"split": split, "path": RepoLayout.split_pattern(stage, split)} for split in ("train", "dropped")
                      if split == "train" or m.rows(split)]
        entry: dict[str, Any] = {"config_name": stage, "data_files": data_files}
        if STAGES[stage].hub_default:
            entry["default"] = True
        configs.append(entry)
    return configs


EXACT, GAP, DEPARTURE = "exact", "gap", "departure"  # the kinds of a stage's card notes (stages.base)
BENCHMARK = "benchmark:"  # the role prefix of benchmarks a stage pins like models (decontamination)


def notes(manifests: dict[str, Manifest]) -> dict[str, list[str]]:
    """The card's account of the recipe: exact, gap (our rule) and departure lines, per stage."""
    out: dict[str, list[str]] = {EXACT: [], GAP: [], DEPARTURE: []}
    for stage in _ordered(manifests):
        for kind, text in STAGES[stage].card_notes(manifests[stage].recipe.params):
            out[kind].append(f"`{stage}`: {text}.")
    engines = {m.recipe.engine["dtype"] for m in manifests.values() if m.recipe.engine}
    if engines:
        out[GAP].append(f"generation dtype {', '.join(sorted(engines))}: the paper does not state one (the released "
                        "code leaves vLLM's default, the checkpoint's own dtype).")
    out[DEPARTURE].append(
        "Ids and seeds: rows have lineage ids (`{generator}-{index:08d}`, `{question_id}-r{k}`) and every random draw "
        "is seeded with BLAKE2b(seed, stage, row id, k) cut to 63 bits, shards written sorted by id. The release "
        "seeds vLLM from the wall clock and writes shards in no stable order: it samples the same distributions, "
        "but no run of it can be repeated.")
    return out


def funnel_rows(manifests: dict[str, Manifest]) -> list[dict[str, str]]:
    """The card's funnel table, read by units as the terminal's (`run/funnel.py`): a stage that fans out shows what it
    made, and kept is out of that."""
    from ..run.funnel import funnel

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

    from .figures import card_figures

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
            "models": {role: p.model_dump() for role, p in m.recipe.models.items() if not role.startswith(BENCHMARK)},
            "benchmarks": {role.removeprefix(BENCHMARK): p.model_dump() for role, p in m.recipe.models.items()
                           if role.startswith(BENCHMARK)},
            "engines": m.execution.engines(),
            "params": json.dumps(m.recipe.params, sort_keys=True, ensure_ascii=False),
            "code_version": m.recipe.code_version, "tokens": m.tokens.completion,
            "seconds": m.execution.cost.wall_seconds,
            "attested": [a for a in attestations or [] if a.get("stage") == stage],
            "derived": _derived(m),
        })
    any_manifest = next(iter(manifests.values()), None)
    preset = any_manifest.preset if any_manifest else None
    front = card_data(manifests, total, preset)
    template = resources.files(__package__).joinpath("templates", "dataset_card.md").read_text(encoding="utf-8")
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
    return env.from_string(template).render(
        front_matter=front.to_yaml(), pretty_name=front.pretty_name, repo=repo, loader=loader, stages=stages, preset=preset,
        seed=any_manifest.recipe.seed if any_manifest else None,
        has_dropped=any(len(c["data_files"]) > 1 for c in front.configs),
        notes=notes(manifests), attested=any(s["attested"] for s in stages),
        sections=[env.from_string(template).render(**values) for template, values in _sections(manifests)],
        funnel=funnel_rows(manifests), figures=card_figures({s: manifests[s] for s in _ordered(manifests)}, images),
    )


def card_data(manifests: dict[str, Manifest], total: int, preset: str | None):
    """The card's YAML through huggingface_hub's card API, with `dataset_info` as `push_to_hub` writes it: per config
    its features and splits (num_examples, num_bytes: the rows' Arrow size), download_size (the Parquet files) and
    dataset_size (the Arrow sizes), listed by config name."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    from ..stages import STAGES

    data = DatasetCardData(
        license="apache-2.0", language=["en"], task_categories=["text-generation", "question-answering"],
        tags=["math", "synthetic", "scalequest", "reasoning"], size_categories=[size_category(total)],
        pretty_name=f"ScaleQuest regenerated ({preset or 'custom'})", configs=configs_yaml(manifests))
    infos = {}
    for entry in data.configs:
        m = manifests[entry["config_name"]]
        splits, download = SplitDict(), 0
        for split in (f["split"] for f in entry["data_files"]):
            files = m.split_files(split)
            arrow = [f.arrow_bytes for f in files]
            # a manifest written before the size was recorded says nothing: 0, as `datasets` says of unknown sizes
            splits.add(SplitInfo(split, num_bytes=sum(arrow) if None not in arrow else 0, num_examples=m.rows(split)))
            download += sum(f.bytes for f in files)
        infos[m.stage] = DatasetInfo(features=STAGES[m.stage].features, splits=splits, download_size=download,
                                     dataset_size=sum(s.num_bytes for s in splits.values()))
    DatasetInfosDict(infos).to_dataset_card_data(data)
    return data


def _derived(m: Manifest) -> str | None:
    """`run --from`: "derived from REV (commit C): N of M input rows reused (mode)", or why nothing was."""
    reuse = m.execution.reuse
    if reuse is None:
        return None
    where = f"`{reuse.revision or reuse.source}`" + (f" (commit `{reuse.commit[:12]}`)" if reuse.commit else "")
    if reuse.mode == "none":
        return f"derived from {where}: recomputed ({reuse.reason})"
    how = "the stage taken whole" if reuse.mode == "stage" else "rows whose input is unchanged"
    return f"derived from {where}: {reuse.rows:,} of {m.counts.rows_in:,} input rows reused ({how})"


def _sections(manifests: dict[str, Manifest]) -> list[tuple[str, dict[str, Any]]]:
    """The sections stages add to the card (`Stage.card_section`), in stage order."""
    found = (STAGES[stage].card_section(manifests[stage]) for stage in _ordered(manifests))
    return [section for section in found if section is not None]


def _ordered(manifests: dict[str, Any]) -> list[str]:
    return [s for s in STAGE_ORDER if s in manifests]
