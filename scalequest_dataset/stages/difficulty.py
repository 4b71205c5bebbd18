"""Stage 6 of the paper: a difficulty score per question, then seeded sampling.

The paper's scorer (DeepSeekMath-7B-Base with a regression head on DeepSeekMath-7B-RL's fail rates) is not
released. Two methods stand in for it:
- `scorer`: any sequence-classification/regression model, its raw output clamped to [0, 1];
- `self-consistency`: k samples of a solver; difficulty = 1 - (largest group of equivalent final answers)/k,
  unanswered samples agreeing with nothing (an empirical fail-rate proxy of the same kind).

Sampling: bucket = bisect_right(buckets, difficulty), so bucket i holds [buckets[i-1], buckets[i]); a row is
kept iff u(row) < keep[generator][bucket], u a seeded uniform draw of the row's id alone, so the decision
never depends on row order, shard cut or batch. Generators without a keep entry are always kept."""

from __future__ import annotations

import bisect
from typing import Any

import datasets

from ..answers import extract_answer, largest_agreement
from ..engines import Engine, Request, Sampling
from ..ids import derive_seed, uniform
from ..prompts import (
    RESPONSE_INSTRUCTION,
    RESPONSE_PROMPT,
    pre_query_template,
    response_instruction,
    response_prompt,
)
from .base import ShardResult, Stage, StageContext, with_columns, with_drop_reason
from .solvability import FEATURES as SOLVABILITY_FEATURES

# The keep draw has its own stream: the samples use derive_seed(seed, "difficulty", id, k), and a draw from
# the same stream at k=0 would be the first sample's seed rescaled.
KEEP_STREAM = "difficulty-keep"
CHATML_STOP = pre_query_template("qwen").stop  # the raw response prompt is ChatML

FEATURES = with_columns(
    SOLVABILITY_FEATURES,
    difficulty=datasets.Value("float64"),  # in [0, 1], 1 = hardest
    difficulty_bucket=datasets.Value("int32"),
    keep_draw=datasets.Value("float64"),  # u(row): kept iff keep_draw < keep[generator][bucket]
    difficulty_answers=datasets.Sequence(datasets.Value("string")),  # self-consistency: each sample's answer
)


def bucket_of(score: float, edges: list[float]) -> int:
    return bisect.bisect_right(edges, score)


def self_consistency_difficulty(answers: list[str | None]) -> float:
    return 1.0 - largest_agreement(answers) / len(answers)


class DifficultyStage(Stage):
    name = "difficulty"
    version = "1"
    input = "solvability"
    description = "Questions with a difficulty score in [0, 1], sampled by generator and difficulty bucket."
    features = FEATURES
    dropped_features = with_drop_reason(FEATURES)

    def model_specs(self) -> dict[str, Any]:
        if self.params.method == "scorer":
            return {"scorer": self.params.scorer}
        return {"sampler": self.params.model}

    def prompts(self) -> dict[str, str]:
        if self.params.method == "scorer":
            return {"scorer": "user: {query}"}
        return {"sampler": RESPONSE_PROMPT if self.params.prompt == "response" else RESPONSE_INSTRUCTION}

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        if not rows:
            return ShardResult([])
        if self.params.method == "scorer":
            scores, answers, tokens = self.score(rows, ctx), [None] * len(rows), 0
        else:
            scores, answers, tokens = self.sample(rows, ctx)
        kept, dropped = [], []
        for row, score, sample_answers in zip(rows, scores, answers, strict=True):
            out = {**row, **self.decide(row, score), "difficulty_answers": sample_answers}
            if out["keep_draw"] < self.keep_probability(row["generator"], out["difficulty_bucket"]):
                kept.append(out)
            else:
                dropped.append({**out, "drop_reason": "easy-sampled-out"})
        return ShardResult(kept, dropped, tokens=tokens)

    def decide(self, row: dict[str, Any], score: float) -> dict[str, Any]:
        return {"difficulty": score, "difficulty_bucket": bucket_of(score, self.params.buckets),
                "keep_draw": uniform(self.config.seed, KEEP_STREAM, row["id"])}

    def keep_probability(self, generator: str, bucket: int) -> float:
        table = self.params.keep.get(generator)
        return 1.0 if table is None else table[bucket]

    def score(self, rows: list[dict[str, Any]], ctx: StageContext) -> list[float]:
        engine = ctx.engine(self.resolved_models()["scorer"], task="score")
        raw = engine.score([[{"role": "user", "content": r["query"]}] for r in rows], ctx.progress)
        return [min(max(s, 0.0), 1.0) for s in raw]  # a regressed fail rate may overshoot [0, 1]

    def sample(self, rows: list[dict[str, Any]], ctx: StageContext) -> tuple[list[float], list[list], int]:
        k = self.params.samples
        engine = ctx.engine(self.resolved_models()["sampler"])
        sampling = Sampling(self.params.temperature, self.params.top_p, self.params.max_tokens,
                            CHATML_STOP if self.params.prompt == "response" else ())
        requests = [Request(self.prompt(engine, r["query"]), sampling, derive_seed(self.config.seed, self.name, r["id"], j))
                    for r in rows for j in range(k)]
        completions = engine.generate(requests, ctx.per_row_progress(k))
        answers = [[extract_answer(c.text) for c in completions[i * k : (i + 1) * k]] for i in range(len(rows))]
        scores = [self_consistency_difficulty(a) for a in answers]
        return scores, answers, sum(c.completion_tokens for c in completions)

    def prompt(self, engine: Engine, query: str) -> str:
        if self.params.prompt == "response":
            return response_prompt(query)
        return engine.chat_prompt([{"role": "user", "content": response_instruction(query)}])
