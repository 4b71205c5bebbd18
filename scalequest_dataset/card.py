"""The dataset card rendered into every published revision's README.md: YAML `configs:` for every stage
present (so `load_dataset(repo, stage)` finds its files), the funnel, lineage, and the rules we chose."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import yaml

from .config import STAGE_ORDER
from .stages import STAGES


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M"


def configs_yaml(manifests: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    configs = []
    for stage in _ordered(manifests):
        rows: dict[str, int] = {"train": 0}
        for shard in manifests[stage]["shards"]:
            for split, info in shard["files"].items():
                rows[split] = rows.get(split, 0) + info["rows"]
        # `datasets` cannot load a split without rows, so an empty `dropped` split is left out.
        data_files = [{"split": split, "path": f"data/{stage}/{split}-*.parquet"} for split in ("train", "dropped")
                      if split == "train" or rows.get(split)]
        entry: dict[str, Any] = {"config_name": stage, "data_files": data_files}
        if stage == "default":
            entry["default"] = True
        configs.append(entry)
    return configs


def choices(manifests: dict[str, dict[str, Any]]) -> list[str]:
    """The rules the paper leaves open, read from the stages' own docstrings and parameters."""
    lines = []
    for stage in _ordered(manifests):
        cls = STAGES.get(stage)
        note = getattr(cls, "choice", None) if cls else None
        if note:
            lines.append(f"`{stage}`: {note}")
    lines.append("Ids and seeds: ids come from lineage (`{generator}-{index:08d}`, `{question_id}-r{k}`); every "
                 "random draw is seeded with BLAKE2b(seed, stage, row id, k) cut to 63 bits; shards are written "
                 "sorted by id.")
    return lines


def render_card(repo: str, manifests: dict[str, dict[str, Any]], tags: dict[str, str | None],
                loader: str = "datasets") -> str:
    import jinja2

    stages = []
    total = 0
    for stage in _ordered(manifests):
        m = manifests[stage]
        rows = m["counts"]["rows_out"]
        total = max(total, rows)
        stages.append({
            "stage": stage, "description": m.get("description", ""), "rows": rows, "rows_in": m["counts"]["rows_in"],
            "drops": ", ".join(f"{k}: {v:,}" for k, v in m["counts"]["dropped"].items()),
            "fingerprint": m["fingerprint"], "tag": tags.get(stage), "var": stage.replace("-", "_"),
            "input": m["input"]["stage"], "input_revision": m["input"].get("revision"),
            "models": m["models"], "engines": m.get("engines", {}),
            "params": json.dumps(m["params"], sort_keys=True, ensure_ascii=False), "code_version": m["code_version"],
            "tokens": m["cost"]["tokens"], "seconds": m["cost"]["seconds"],
        })
    any_manifest = next(iter(manifests.values()), {})
    front = {
        "license": "apache-2.0",
        "language": ["en"],
        "task_categories": ["text-generation", "question-answering"],
        "tags": ["math", "synthetic", "scalequest", "reasoning"],
        "size_categories": [size_category(total)],
        "pretty_name": f"ScaleQuest regenerated ({any_manifest.get('preset', 'custom')})",
        "configs": configs_yaml(manifests),
    }
    template = resources.files(__package__).joinpath("templates", "dataset_card.md").read_text()
    env = jinja2.Environment(keep_trailing_newline=True, undefined=jinja2.StrictUndefined, autoescape=False)
    return env.from_string(template).render(
        front_matter=yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(),
        pretty_name=front["pretty_name"], repo=repo, loader=loader, stages=stages, preset=any_manifest.get("preset"),
        seed=any_manifest.get("seed"), has_dropped=any(len(c["data_files"]) > 1 for c in front["configs"]),
        choices=choices(manifests),
    )


def _ordered(manifests: dict[str, Any]) -> list[str]:
    return [s for s in STAGE_ORDER if s in manifests]
