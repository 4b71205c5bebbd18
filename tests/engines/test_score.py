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


def check_progress(engine) -> list[tuple[int, int]]:
    """`score` reports every conversation scored and the tokens it read (it generates none: the tokens of
    `score_length`, from the model's tokenizer), and scores the same without a progress callback."""
    convs = conversations()
    calls: list[tuple[int, int]] = []
    scores = engine.score(convs, progress=lambda rows, tokens: calls.append((rows, tokens)))
    assert scores == engine.score(convs)  # reporting only observes
    assert sum(r for r, _ in calls) == len(convs)
    assert sum(t for _, t in calls) == sum(engine.score_length(c) for c in convs) > 0
    return calls


def test_transformers_score_reports_the_tokens_it_reads(tiny_reward_path):
    engine = load_engine("transformers", tiny_reward_path, dtype="float32", task="score")
    engine.batch_size = 8
    calls = check_progress(engine)
    assert len(calls) > 1  # per batch, not once at the end


def test_simulated_score_reports_the_tokens_it_reads():
    check_progress(load_engine("simulate", "org/reward-model", task="score"))


@pytest.mark.vllm
def test_vllm_score_reports_each_request_as_it_finishes_with_the_tokens_it_read(vllm_score_engine):
    calls = check_progress(vllm_score_engine)
    assert len(calls) == len(conversations()) and all(rows == 1 for rows, _ in calls)  # one per finished request
    assert "step" not in vars(vllm_score_engine.llm.llm_engine)  # the engine's own step again
