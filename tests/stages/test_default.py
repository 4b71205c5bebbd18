"""Stage 8b, the released config `default`: best response per question; ties to the lowest response id."""

from __future__ import annotations

import math

from stagekit import make_ctx, make_stage


def scored(qid: str, k: int, reward: float, difficulty: float | None = 0.3) -> dict:
    return {"id": f"{qid}-r{k}", "question_id": qid, "generator": qid.rsplit("-", 1)[0], "query": f"Q of {qid}",
            "response": f"response {k} of {qid}", "sample": k, "seed": k, "finish_reason": "stop",
            "completion_tokens": 5, "has_answer_format": True, "difficulty": difficulty, "answer": "1",
            "reward": reward}


A, B, C = "qwen2-math-qgen-00000001", "deepseek-qgen-00000003", "deepseek-qgen-00000004"
ROWS = [
    scored(A, 0, 0.1), scored(A, 3, 0.9), scored(A, 4, 0.2),
    scored(B, 4, 2.5, None), scored(B, 1, 2.5, None), scored(B, 2, 2.5, None),  # a three-way tie
    scored(C, 0, math.nan), scored(C, 1, -3.0),
]


def select(rows):
    stage = make_stage("default", {})
    ctx, _ = make_ctx(stage)
    return stage.process(rows, ctx)


def test_one_best_response_per_question():
    result = select(ROWS)
    best = {r["id"]: r for r in result.rows}
    assert sorted(best) == sorted([A, B, C])
    assert best[A]["response_id"] == f"{A}-r3" and best[A]["reward"] == 0.9
    assert best[A]["response"] == f"response 3 of {A}" and best[A]["query"] == f"Q of {A}"
    assert best[A]["n_candidates"] == 3 and best[A]["difficulty"] == 0.3
    assert best[A]["generator"] == "qwen2-math-qgen"


def test_equal_rewards_go_to_the_lowest_response_id():
    assert {r["id"]: r["response_id"] for r in select(ROWS).rows}[B] == f"{B}-r1"


def test_a_nan_reward_never_wins():
    assert {r["id"]: r["response_id"] for r in select(ROWS).rows}[C] == f"{C}-r1"


def test_choice_does_not_depend_on_row_order():
    forward = select(ROWS).rows
    backward = select(list(reversed(ROWS))).rows
    assert sorted(forward, key=lambda r: r["id"]) == sorted(backward, key=lambda r: r["id"])


def test_columns_are_the_released_schema_plus_ids_and_metadata():
    stage = make_stage("default", {})
    assert stage.name == "default" and stage.group_key == "question_id"
    assert list(stage.features) == ["id", "query", "response", "response_id", "generator", "reward", "difficulty",
                                    "n_candidates"]
    assert set(select(ROWS).rows[0]) == set(stage.features)
