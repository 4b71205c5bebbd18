"""Stage 8a of the paper: a reward per response.

`reward-model`: the paper's InternLM2-7B-Reward (fp16) scores (raw question, response) as a user/assistant
chat; the raw scalar is the reward. `self-consistency` (presets without a reward model): the share of the
question's OTHER responses whose final answer is equivalent to this one's; no answer scores 0. It needs a
question's sibling responses together, so the stage groups by `question_id` (a shard never splits one)."""

from __future__ import annotations

from itertools import groupby
from typing import Any

import datasets

from ..answers import agreement_shares, extract_answer
from .base import ShardResult, Stage, StageContext, with_columns
from .responses import FEATURES as RESPONSE_FEATURES

FEATURES = with_columns(
    RESPONSE_FEATURES,
    answer=datasets.Value("string"),  # the extracted final answer (null: none found)
    reward=datasets.Value("float64"),
)


def conversation(query: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": query}, {"role": "assistant", "content": response}]


class RewardStage(Stage):
    name = "reward"
    version = "1"
    input = "responses"
    description = "Every kept response with its reward (reward model, or agreement with its siblings)."
    features = FEATURES
    group_key = "question_id"

    def model_specs(self) -> dict[str, Any]:
        return {"reward": self.params.model} if self.params.method == "reward-model" else {}

    def prompts(self) -> dict[str, str]:
        if self.params.method == "reward-model":
            return {"reward": "user: {query} / assistant: {response}"}
        return {}

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        if not rows:
            return ShardResult([])
        answers = [extract_answer(r["response"]) for r in rows]
        if self.params.method == "reward-model":
            rewards = self.model_rewards(rows, ctx)
        else:
            rewards = self_consistency_rewards(rows, answers)
            ctx.report(len(rows))
        out = [{**r, "answer": a, "reward": w} for r, a, w in zip(rows, answers, rewards, strict=True)]
        return ShardResult(out)

    def model_rewards(self, rows: list[dict[str, Any]], ctx: StageContext) -> list[float]:
        overrides: dict[str, Any] = {"task": "score", "trust_remote_code": self.params.trust_remote_code}
        if self.params.dtype is not None:
            overrides["dtype"] = self.params.dtype
        engine = ctx.engine(self.resolved_models()["reward"], **overrides)
        return engine.score([conversation(r["query"], r["response"]) for r in rows], ctx.progress)


def self_consistency_rewards(rows: list[dict[str, Any]], answers: list[str | None]) -> list[float]:
    """Agreement shares within each question's group (rows arrive grouped by question id, sorted by id)."""
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["question_id"], rows[i]["id"]))
    rewards = [0.0] * len(rows)
    for _, members in groupby(order, key=lambda i: rows[i]["question_id"]):
        idx = list(members)
        for i, share in zip(idx, agreement_shares([answers[i] for i in idx]), strict=True):
            rewards[i] = share
    return rewards
