"""The score path (reward / regression heads): a conversation's score is the same alone or in any batch,
and both engines score the same tokens."""

from __future__ import annotations

import filecmp

import pytest

from scalequest_dataset.engines import load_engine
from scalequest_dataset.recipe.models import build_tiny_reward_model


def conversations() -> list[list[dict[str, str]]]:
    # Mixed lengths (and lengths around the padding multiple), so batches really differ in composition.
    return [[{"role": "user", "content": f"What is {i} + {i * 7}?"},
             {"role": "assistant", "content": "The answer is " + "4" * (i % 19)}] for i in range(30)]


def check_batch_invariance(engine) -> list[float]:
    convs = conversations()
    engine.batch_size = 64
    together = engine.score(convs)
    engine.batch_size = 1
    alone = [engine.score([c])[0] for c in convs]
    engine.batch_size = 5
    reversed_order = engine.score(convs[::-1])[::-1]
    engine.batch_size = 64  # a session's engine: left with the bound it was loaded with
    assert together == alone == reversed_order
    assert len(set(together)) > 20, "different conversations should score differently"
    return together


def test_transformers_scores_are_batch_invariant(tiny_reward_path):
    engine = load_engine("transformers", tiny_reward_path, dtype="float32", task="score")
    check_batch_invariance(engine)


def test_a_generation_engine_refuses_to_score(tiny_model_path):
    engine = load_engine("transformers", tiny_model_path, dtype="float32")
    with pytest.raises(RuntimeError, match="task='score'"):
        engine.score(conversations()[:1])


def test_unknown_task_is_refused(tiny_reward_path):
    with pytest.raises(ValueError, match="allowed are generate, score"):
        load_engine("transformers", tiny_reward_path, task="embed")


def test_tiny_reward_model_is_byte_identical(tmp_path):
    a, b = build_tiny_reward_model(tmp_path / "a"), build_tiny_reward_model(tmp_path / "b")
    names = sorted(p.name for p in a.iterdir())
    assert "model.safetensors" in names
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert mismatch == [] and errors == []


@pytest.mark.vllm
def test_vllm_scores_are_batch_invariant_and_match_transformers(vllm_score_engine, tiny_reward_path):
    scores = check_batch_invariance(vllm_score_engine)
    reference = load_engine("transformers", tiny_reward_path, dtype="float32", task="score").score(conversations())
    assert scores == pytest.approx(reference, abs=1e-4)
