"""Stage 8b of the paper, the released config `default`: the best response per question (best-of-k by
reward). The paper does not say how ties break; here the lowest response id (string order) wins. A NaN
reward never wins over a number. Keeps the released schema's `query` and `response`, plus ids and metadata."""

from __future__ import annotations

import math
from itertools import groupby
from typing import Any, ClassVar, Literal

import datasets

from ..recipe.params import Strict
from .base import (
    DIFFICULTY_FIGURE,
    GAP,
    GENERATORS_FIGURE,
    REWARD_FIGURE,
    Note,
    ShardResult,
    Stage,
    StageContext,
    length_figure,
)


class Params(Strict):
    """Stage 8b, the released config `default`: the best response per question; ties go to the lowest id."""

    tie_break: Literal["lowest-response-id"] = "lowest-response-id"

FEATURES = datasets.Features({
    "id": datasets.Value("string"),  # the question id
    "query": datasets.Value("string"),
    "response": datasets.Value("string"),
    "response_id": datasets.Value("string"),
    "generator": datasets.Value("string"),
    "reward": datasets.Value("float64"),
    "difficulty": datasets.Value("float64"),
    "n_candidates": datasets.Value("int32"),  # the question's responses that reached this stage
})


def best_response(candidates: list[dict[str, Any]]) -> dict[str, Any]:
    """Highest reward; ties to the lowest id."""
    def key(row: dict[str, Any]) -> tuple[float, str]:
        reward = row["reward"]
        return (math.inf if reward is None or math.isnan(reward) else -reward, row["id"])

    return min(candidates, key=key)


class DefaultStage(Stage):
    name = "default"
    statistics: ClassVar[dict[str, str]] = {"response_id": "id"}  # the diff's statistics (diffing/stats.py)
    hub_default = True  # `load_dataset(repo)` without a config name loads this one
    figures = (length_figure("query"), length_figure("response"), DIFFICULTY_FIGURE, REWARD_FIGURE,
               GENERATORS_FIGURE)

    @classmethod
    def card_notes(cls, p: dict[str, Any]) -> list[Note]:
        return [(GAP, "best-of-k by reward; the paper leaves ties open: the lowest response id wins")]
    version = "2"  # 2: shards cut by output rows (rows_per_shard questions), not input rows
    Params = Params
    unit_in, unit_out = "response", "question"
    reads = ("id", "question_id", "query", "response", "reward", "generator")
    description = "One (query, response) pair per question: its highest-reward response."
    features = FEATURES
    group_key = "question_id"
    one_row_per_group = True

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        out = []
        ordered = sorted(rows, key=lambda r: (r["question_id"], r["id"]))
        for qid, members in groupby(ordered, key=lambda r: r["question_id"]):
            group = list(members)
            best = best_response(group)
            out.append({"id": qid, "query": best["query"], "response": best["response"], "response_id": best["id"],
                        "generator": best["generator"], "reward": best["reward"],
                        "difficulty": best.get("difficulty"), "n_candidates": len(group)})
        ctx.report(len(rows))
        return ShardResult(out)
