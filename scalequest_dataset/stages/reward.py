"""Stage 8a of the paper: a reward per response.

`reward-model`: the paper's InternLM2-7B-Reward (fp16) scores (raw question, response) as a user/assistant
chat; the raw scalar is the reward. `self-consistency` (presets without a reward model): the share of the
question's OTHER responses whose final answer is equivalent to this one's; no answer scores 0. It needs a
question's sibling responses together, so the stage groups by `question_id` (a shard never splits one)."""

from __future__ import annotations

import time
from itertools import groupby
from typing import Any, ClassVar, Literal

import datasets
from pydantic import model_validator

from ..engines.base import Score, score_guarded
from ..recipe.answers import agreement_shares, extract_answer
from ..recipe.params import ModelSpec, Strict
from .base import (
    DEPARTURE,
    EXACT,
    REWARD_FIGURE,
    Note,
    ShardResult,
    Stage,
    StageContext,
    rejected,
    with_columns,
    with_drop_reason,
)
from .responses import FEATURES as RESPONSE_FEATURES


class Params(Strict):
    """Stage 8a: a reward per response: a reward model on (raw question, response) as a user/assistant chat,
    or self-consistency (agreement of the final answer with its siblings) for presets without one."""

    method: Literal["reward-model", "self-consistency"] = "reward-model"
    model: ModelSpec | None = None
    trust_remote_code: bool = False  # InternLM2-Reward ships its model code with its weights
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = None  # None: the run's engine.dtype

    @model_validator(mode="after")
    def _check(self) -> Params:
        if self.method == "reward-model" and self.model is None:
            raise ValueError("method 'reward-model' needs `model`")
        return self

FEATURES = with_columns(
    RESPONSE_FEATURES,
    answer=datasets.Value("string"),  # the extracted final answer (null: none found)
    reward=datasets.Value("float64"),
)


def conversation(query: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": query}, {"role": "assistant", "content": response}]


class RewardStage(Stage):
    name = "reward"
    statistics: ClassVar[dict[str, str]] = {"reward": "number"}  # the diff's statistics (diffing/stats.py)
    paper: ClassVar[dict[str, Any]] = {"model": "internlm/internlm2-7b-reward", "dtype": "float16"}
    figures = (REWARD_FIGURE,)

    @classmethod
    def card_notes(cls, p: dict[str, Any]) -> list[Note]:
        if p.get("method") != "reward-model":
            return [(DEPARTURE, "no reward model: a response's reward is the share of its sibling responses with an "
                                "equivalent final answer (math-verify)")]
        departs = cls.departures(p)
        exact = [] if departs else [(EXACT, "internlm2-7b-reward in float16 scores (raw question, response) as a "
                                            "user/assistant chat, as the paper")]
        return [*exact, *departs, (DEPARTURE, "pairs are scored in batches (the release: one at a time), for "
                                              "throughput; a pair's score does not depend on its batch-mates")]
    version = "2"
    description = "Every kept response with its reward (reward model, or agreement with its siblings)."
    Params = Params
    unit_in, unit_out = "response", "response"
    reads = ("id", "question_id", "query", "response")
    features = FEATURES
    dropped_features = with_drop_reason(FEATURES)  # responses the reward model refused
    group_key = "question_id"
    origin = "question_id"  # self-consistency reads the group: a group is reused whole or not at all
    progress_tokens = "read"  # a reward model scores: the bar counts the tokens it reads

    def model_specs(self) -> dict[str, Any]:
        return {"reward": self.params.model} if self.params.method == "reward-model" else {}

    def prompts(self) -> dict[str, str]:
        if self.params.method == "reward-model":
            return {"reward": "user: {query} / assistant: {response}"}
        return {}

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        if not rows:
            return ShardResult([])
        started = time.perf_counter()
        answers = [extract_answer(r["response"]) for r in rows]
        if self.params.method != "reward-model":
            # no engine call to overlap: the answers are the whole of this method's work
            rewards = self_consistency_rewards(rows, answers)
            ctx.answer_seconds += time.perf_counter() - started
            ctx.report(len(rows))
            return ShardResult([{**r, "answer": a, "reward": w} for r, a, w in zip(rows, answers, rewards, strict=True)])
        ctx.answer_seconds += time.perf_counter() - started
        kept, dropped = [], []
        for r, a, score in zip(rows, answers, self.model_rewards(rows, ctx), strict=True):
            out = {**r, "answer": a, "reward": score.value}
            if score.error:
                dropped.append(rejected(out, score))
            else:
                kept.append(out)
        return ShardResult(kept, dropped)

    def model_rewards(self, rows: list[dict[str, Any]], ctx: StageContext) -> list[Score]:
        overrides: dict[str, Any] = {"task": "score", "trust_remote_code": self.params.trust_remote_code}
        if self.params.dtype is not None:
            overrides["dtype"] = self.params.dtype
        engine = ctx.engine(self.models()["reward"], **overrides)
        return score_guarded(engine, [conversation(r["query"], r["response"]) for r in rows], ctx.progress)


def self_consistency_rewards(rows: list[dict[str, Any]], answers: list[str | None]) -> list[float]:
    """Agreement shares within each question's group (rows arrive grouped by question id, sorted by id)."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["question_id"], rows[i]["id"]))
    rewards = [0.0] * len(rows)
    for _, members in groupby(order, key=lambda i: rows[i]["question_id"]):
        idx = list(members)
        for i, share in zip(idx, agreement_shares([answers[i] for i in idx]), strict=True):
            rewards[i] = share
    return rewards
