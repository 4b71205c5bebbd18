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
from typing import Any, ClassVar, Literal

import datasets
from pydantic import Field, model_validator

from ..engines import Completion, Engine, Request, Sampling
from ..engines.base import Score, generate_guarded, score_guarded
from ..recipe.answers import GroupedAnswers, largest_agreement
from ..recipe.ids import derive_seed, uniform
from ..recipe.params import ModelSpec, Strict
from ..recipe.prompts import (
    RESPONSE_INSTRUCTION,
    RESPONSE_PROMPT,
    pre_query_template,
    response_instruction,
    response_prompt,
)
from .base import (
    DEPARTURE,
    DIFFICULTY_FIGURE,
    GAP,
    Note,
    ShardResult,
    Stage,
    StageContext,
    rejected,
    token_counts,
    token_sum,
    with_columns,
    with_drop_reason,
)
from .solvability import FEATURES as SOLVABILITY_FEATURES

# The keep draw has its own stream: the samples use derive_seed(seed, "difficulty", id, k), and a draw from
# the same stream at k=0 would be the first sample's seed rescaled.
KEEP_STREAM = "difficulty-keep"
CHATML_STOP = pre_query_template("qwen").stop  # the raw response prompt is ChatML


class Params(Strict):
    """Stage 6: a difficulty score in [0, 1] (1 = hardest) per question, then seeded sampling: a row is kept
    iff u(row) < keep[generator][bucket(score)], u a per-row seeded uniform draw (order/shard invariant)."""

    method: Literal["scorer", "self-consistency"] = "self-consistency"
    scorer: ModelSpec | None = None  # a sequence-classification/regression model (method: scorer)
    model: ModelSpec | None = None  # the sampler whose agreement measures difficulty (self-consistency)
    # The sampler's prompt: `response` = the paper's raw Qwen-format response prompt; `chat` = the same
    # instruction in the sampler's own chat template (for samplers that are not ChatML models).
    prompt: Literal["response", "chat"] = "response"
    samples: int = Field(4, ge=2)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)
    buckets: list[float] = Field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])  # score edges; len(buckets) + 1 buckets
    keep: dict[str, list[float]] = Field(default_factory=dict)  # generator -> keep probability per bucket; unlisted generators keep all

    @model_validator(mode="after")
    def _check(self) -> Params:
        if self.method == "scorer" and self.scorer is None:
            raise ValueError("method 'scorer' needs `scorer` (a sequence-classification model)")
        if self.method == "self-consistency" and self.model is None:
            raise ValueError("method 'self-consistency' needs `model` (the sampler)")
        if self.buckets != sorted(self.buckets):
            raise ValueError(f"buckets must be ascending, got {self.buckets}")
        for gen, probs in self.keep.items():
            if len(probs) != len(self.buckets) + 1:
                raise ValueError(f"keep.{gen} needs {len(self.buckets) + 1} probabilities (one per bucket)")
            if any(not 0 <= p <= 1 for p in probs):
                raise ValueError(f"keep.{gen}: probabilities must be within [0, 1]")
        return self


FEATURES = with_columns(
    SOLVABILITY_FEATURES,
    difficulty=datasets.Value("float64"),  # in [0, 1], 1 = hardest
    difficulty_bucket=datasets.Value("int32"),
    keep_draw=datasets.Value("float64"),  # u(row): kept iff keep_draw < keep[generator][bucket]
    difficulty_answers=datasets.Sequence(datasets.Value("string")),  # self-consistency: each sample's answer
    difficulty_prompt_tokens=datasets.Value("int32"),  # what the samples read and wrote for this row
    difficulty_completion_tokens=datasets.Value("int32"),
)


def bucket_of(score: float, edges: list[float]) -> int:
    return bisect.bisect_right(edges, score)


def self_consistency_difficulty(answers: list[str | None]) -> float:
    return 1.0 - largest_agreement(answers) / len(answers)


class DifficultyStage(Stage):
    name = "difficulty"
    statistics: ClassVar[dict[str, str]] = {"difficulty": "unit", "keep_draw": "unit"}  # the diff's statistics (diffing/stats.py)
    figures = (DIFFICULTY_FIGURE,)

    @classmethod
    def card_notes(cls, p: dict[str, Any]) -> list[Note]:
        sampling = (GAP, f"the paper's sampling rule is not released: a row is kept iff a seeded per-row uniform "
                         f"draw < keep[generator][bucket], bucket edges {p.get('buckets')}, keep table "
                         f"{p.get('keep') or 'none (all kept)'}")
        if p.get("method") == "self-consistency":
            return [(DEPARTURE, f"difficulty = 1 - (largest group of equivalent final answers) / {p.get('samples')} "
                                f"samples of `{(p.get('model') or {}).get('id')}`, in place of the paper's scorer "
                                "(a DeepSeekMath-7B-Base regression head), which is not released: it measures the "
                                "fail rate that scorer was trained to predict, at the cost of sampling"), sampling]
        return [(GAP, f"a sequence-classification scorer `{(p.get('scorer') or {}).get('id')}` stands in for the "
                      "paper's unreleased scorer"), sampling]
    version = "3"  # 3: the samples' tokens per row
    description = "Questions with a difficulty score in [0, 1], sampled by generator and difficulty bucket."
    Params = Params
    reads = ("id", "query", "generator")
    features = FEATURES
    dropped_features = with_drop_reason(FEATURES)
    reuse_ignores = ("buckets", "keep")  # the keep draw reads the score: a new table never re-runs the model

    def model_specs(self) -> dict[str, Any]:
        if self.params.method == "scorer":
            return {"scorer": self.params.scorer}
        return {"sampler": self.params.model}

    def model_field(self, role: str) -> str:
        return "stages.difficulty.scorer" if role == "scorer" else "stages.difficulty.model"

    def prompts(self) -> dict[str, str]:
        if self.params.method == "scorer":
            return {"scorer": "user: {query}"}
        return {"sampler": RESPONSE_PROMPT if self.params.prompt == "response" else RESPONSE_INSTRUCTION}

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        if not rows:
            return ShardResult([])
        if self.params.method == "scorer":
            scores = self.score(rows, ctx)
            answers, tokens, per_row = [None] * len(rows), {}, [(None, None)] * len(rows)
            failures: list[Any] = [s if s.error else None for s in scores]
        else:
            scores, answers, failures, tokens, per_row = self.sample(rows, ctx)
        result = ShardResult([], [], **tokens)
        for row, score, sample_answers, failure, (prompt, completion) in zip(
                rows, scores, answers, failures, per_row, strict=True):
            row = {**row, "difficulty_prompt_tokens": prompt, "difficulty_completion_tokens": completion}
            if failure is not None:
                result.dropped.append(rejected(row, failure))
                continue
            self.keep_or_drop({**row, "difficulty": score.value, "difficulty_answers": sample_answers}, result)
        return result

    def keep_or_drop(self, out: dict[str, Any], result: ShardResult) -> None:
        """The bucket of the row's score and the seeded keep draw: kept, or dropped as sampled out."""
        out = {**out, **self.decide(out, out["difficulty"])}
        if out["keep_draw"] < self.keep_probability(out["generator"], out["difficulty_bucket"]):
            result.rows.append(out)
        else:
            result.dropped.append({**out, "drop_reason": "easy-sampled-out"})

    def rebuild(self, rows: list[dict[str, Any]], prior: list[tuple[str, dict[str, Any]]]) -> ShardResult:
        """The score (and the samples' answers) as the source recorded them; bucket and keep decided again."""
        result = ShardResult([], [])
        result.prompt_tokens, result.tokens = self.prior_tokens([r for _, r in prior])
        for _, row in prior:
            if row.get("drop_reason") not in (None, "easy-sampled-out"):
                result.dropped.append(row)
                continue
            self.keep_or_drop({k: v for k, v in row.items() if k not in ("drop_reason", "drop_detail")}, result)
        return result

    def prior_tokens(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        return token_sum(rows, "difficulty_prompt_tokens", "difficulty_completion_tokens")

    def decide(self, row: dict[str, Any], score: float) -> dict[str, Any]:
        return {"difficulty": score, "difficulty_bucket": bucket_of(score, self.params.buckets),
                "keep_draw": uniform(self.config.seed, KEEP_STREAM, row["id"])}

    def keep_probability(self, generator: str, bucket: int) -> float:
        table = self.params.keep.get(generator)
        return 1.0 if table is None else table[bucket]

    def score(self, rows: list[dict[str, Any]], ctx: StageContext) -> list[Score]:
        engine = ctx.engine(self.models()["scorer"], task="score")
        raw = score_guarded(engine, [[{"role": "user", "content": r["query"]}] for r in rows], ctx.progress)
        # A regressed fail rate may overshoot [0, 1]; a failed score is clamped nowhere (its row is dropped).
        return [s if s.error else Score(min(max(s.value, 0.0), 1.0)) for s in raw]

    def sample(self, rows: list[dict[str, Any]], ctx: StageContext
               ) -> tuple[list[Score], list[list], list[Completion | None], dict[str, int], list[tuple[int, int]]]:
        """k samples per row; a row any of whose samples the engine refused is dropped with that reason."""
        k = self.params.samples
        engine = ctx.engine(self.models()["sampler"])
        sampling = Sampling(self.params.temperature, self.params.top_p, self.params.max_tokens,
                            CHATML_STOP if self.params.prompt == "response" else ())
        requests = [Request(self.prompt(engine, r["query"]), sampling, derive_seed(self.config.seed, self.name, r["id"], j))
                    for r in rows for j in range(k)]
        # answers and agreement worked out on a thread as the engine finishes each sample (math_verify's CPU off
        # the engine's critical path), the same values as computed after the call
        grouped = GroupedAnswers(len(rows), k, self_consistency_difficulty)
        completions = generate_guarded(engine, requests, ctx.per_row_progress(k),
                                       done=lambda i, c: grouped.add(i, c.text))
        answers, difficulties = grouped.results()
        ctx.answer_seconds += grouped.seconds
        per_row = [completions[i * k : (i + 1) * k] for i in range(len(rows))]
        failures = [next((c for c in group if c.error), None) for group in per_row]
        scores = [Score(d) for d in difficulties]
        per_row_tokens = [(sum(c.prompt_tokens for c in g), sum(c.completion_tokens for c in g)) for g in per_row]
        return scores, answers, failures, token_counts(completions), per_row_tokens

    def prompt(self, engine: Engine, query: str) -> str:
        if self.params.prompt == "response":
            return response_prompt(query)
        return engine.chat_prompt([{"role": "user", "content": response_instruction(query)}])
