"""A synthetic run directory for benchmarks: the `default` stage with N rows of realistic lengths
(ScaleQuest-Math: questions ~300 characters, responses ~1,300), written by the real storage code."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from scalequest_dataset.recipe.config import resolve_config
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.files import write_rows
from scalequest_dataset.run.layout import RunLayout, shard_name
from scalequest_dataset.run.records import (
    Counts,
    FileRecord,
    Manifest,
    ManifestShard,
    Recipe,
    Tokens,
    stage_content,
)
from scalequest_dataset.stages import STAGES

WORDS = ("the of a to and is in that find what if how many number sum total each then so we x y n "
         "solve value equation let answer boxed frac 1 2 3 4 5 6 7 8 9 10 12 15 20 25 100 integer prime "
         "triangle area circle radius probability product ratio percent cost apples students minutes").split()


def _texts(rng: np.random.Generator, n: int, mean_words: int) -> list[str]:
    lengths = rng.poisson(mean_words, n).clip(5)
    idx = rng.integers(0, len(WORDS), lengths.sum())
    words = np.array(WORDS, dtype=object)[idx]
    out, pos = [], 0
    for length in lengths:
        out.append(" ".join(words[pos : pos + length]))
        pos += length
    return out


def make_run(root: Path, rows: int, rows_per_shard: int = 10_000, seed: int = 0,
             change_every: int | None = None) -> Path:
    """`change_every=k`: the same rows, but every k-th row's response differs (a 1/k change, in every shard)."""
    if root.exists():
        shutil.rmtree(root)
    layout = RunLayout(root)
    stage = STAGES["default"]
    config = resolve_config("tiny")
    root.mkdir(parents=True)
    layout.config.write_text(config.yaml(), encoding="utf-8")
    n_shards = (rows + rows_per_shard - 1) // rows_per_shard
    shards = []
    for i in range(n_shards):
        rng = np.random.default_rng([seed, i])
        start, stop = i * rows_per_shard, min(rows, (i + 1) * rows_per_shard)
        n = stop - start
        queries, responses = _texts(rng, n, 55), _texts(rng, n, 240)
        rewards = rng.normal(0, 1, n)
        if change_every:
            for j in range(n):
                if (start + j) % change_every == 0:
                    responses[j] = responses[j] + " (revised)"
        batch = [{"id": f"gen-{start + j:08d}", "query": queries[j], "response": responses[j],
                  "response_id": f"gen-{start + j:08d}-r0", "generator": "gen", "reward": float(rewards[j]),
                  "difficulty": float(j % 10) / 10, "n_candidates": 5} for j in range(n)]
        info = write_rows(layout.data_dir("default") / shard_name("train", i, n_shards), batch, stage.features)
        shards.append(ManifestShard(index=i, rows_in=n, files={"train": FileRecord(**info)}))
    manifest = Manifest(
        stage="default", description=stage.description, fingerprint=f"synthetic-{seed}-{change_every}",
        preset="synthetic",
        recipe=Recipe(seed=seed, code_version=stage.version, config=config.recipe(), params={}, prompts={},
                      models={}, engine=None, input=None),
        shards=shards, counts=Counts(rows_in=rows, rows_out=rows), tokens=Tokens(), content=stage_content(shards))
    rec.write(layout.manifest("default"), manifest)
    return root
