"""Stage 8a: rewards from a reward model on (raw question, response), or from sibling agreement."""

from __future__ import annotations

import pytest
from stagekit import FakeEngine, make_ctx, make_stage


def response(qid: str, k: int, text: str, query: str = "What is half of 1?") -> dict:
    return {"id": f"{qid}-r{k}", "question_id": qid, "generator": qid.rsplit("-", 1)[0], "query": query,
            "response": text, "sample": k, "seed": k, "finish_reason": "stop", "completion_tokens": 3,
            "has_answer_format": True, "difficulty": 0.5}


Q1, Q2 = "qwen2-math-qgen-00000001", "deepseek-qgen-00000002"
ROWS = [
    response(Q1, 0, "so \\boxed{\\frac{1}{2}}"),
    response(Q1, 1, "The answer is 0.5"),
    response(Q1, 2, "\\boxed{2}"),
    response(Q1, 3, "boxed, but no answer"),
    response(Q2, 0, "\\boxed{7}", query="Seven?"),
    response(Q2, 1, "\\boxed{7}", query="Seven?"),
]


def test_self_consistency_reward_is_agreement_with_the_other_responses():
    stage = make_stage("reward", {"method": "self-consistency"})
    assert stage.group_key == "question_id" and stage.model_specs() == {}
    ctx, calls = make_ctx(stage)
    result = stage.process([dict(r) for r in ROWS], ctx)
    rewards = {r["id"]: r["reward"] for r in result.rows}
    assert rewards == {f"{Q1}-r0": pytest.approx(1 / 3), f"{Q1}-r1": pytest.approx(1 / 3), f"{Q1}-r2": 0.0,
                       f"{Q1}-r3": 0.0, f"{Q2}-r0": 1.0, f"{Q2}-r1": 1.0}
    assert {r["id"]: r["answer"] for r in result.rows}[f"{Q1}-r3"] is None
    assert calls.overrides == []  # no engine
    assert not result.dropped


def test_self_consistency_does_not_depend_on_row_order():
    stage = make_stage("reward", {"method": "self-consistency"})
    ctx, _ = make_ctx(stage)
    forward = stage.process([dict(r) for r in ROWS], ctx).rows
    backward = stage.process([dict(r) for r in reversed(ROWS)], ctx).rows
    assert sorted((r["id"], r["reward"]) for r in forward) == sorted((r["id"], r["reward"]) for r in backward)


def test_a_lone_response_scores_zero():
    stage = make_stage("reward", {"method": "self-consistency"})
    ctx, _ = make_ctx(stage)
    assert stage.process([dict(ROWS[0])], ctx).rows[0]["reward"] == 0.0


def test_reward_model_scores_the_raw_question_and_response_as_a_chat():
    stage = make_stage("reward", {"method": "reward-model", "model": "internlm/internlm2-7b-reward",
                                  "trust_remote_code": True, "dtype": "float16"})
    engine = FakeEngine(score=lambda conv: float(len(conv[1]["content"])))
    ctx, calls = make_ctx(stage, engine)
    result = stage.process([dict(r) for r in ROWS], ctx)
    assert calls.overrides == [{"task": "score", "trust_remote_code": True, "dtype": "float16"}]
    assert engine.scored[0] == [{"role": "user", "content": "What is half of 1?"},
                                {"role": "assistant", "content": "so \\boxed{\\frac{1}{2}}"}]
    assert [r["reward"] for r in result.rows] == [float(len(r["response"])) for r in ROWS]
    assert {k: result.rows[0][k] for k in ROWS[0]} == ROWS[0]


def test_reward_model_uses_the_run_dtype_unless_set():
    stage = make_stage("reward", {"model": "org/rm"})
    ctx, calls = make_ctx(stage, FakeEngine(score=lambda conv: 1.0))
    stage.process([dict(ROWS[0])], ctx)
    assert calls.overrides == [{"task": "score", "trust_remote_code": False}]
