"""Each engine reproduces its own outputs whatever else is in the batch (per-row seeds)."""

from __future__ import annotations

import pytest

from scalequest_dataset.engines import Request, Sampling, load_engine
from scalequest_dataset.recipe.prompts import qwen_pre_query

TEMPLATE = qwen_pre_query()
SAMPLING = Sampling(temperature=1.0, top_p=0.99, max_tokens=24, stop=TEMPLATE.stop)


def requests() -> list[Request]:
    # Mixed prompt lengths, so batches really differ in composition.
    prompts = [TEMPLATE.prefix, TEMPLATE.prefix + "What is", TEMPLATE.prefix + "The answer is 4. Why"]
    return [Request(prompts[i % 3], SAMPLING, 1000 + i) for i in range(24)]


def check_batch_invariance(engine) -> None:
    reqs = requests()
    engine.batch_size = 32
    together = engine.generate(reqs)
    engine.batch_size = 1
    alone = engine.generate(reqs)
    engine.batch_size = 7
    reversed_order = engine.generate(reqs[::-1])[::-1]
    assert [c.text for c in together] == [c.text for c in alone] == [c.text for c in reversed_order]
    assert len({c.text for c in together}) > 12, "different seeds should give different samples"
    assert all(c.completion_tokens <= SAMPLING.max_tokens for c in together)


def check_seed_and_greedy(engine) -> None:
    a = engine.generate([Request(TEMPLATE.prefix, SAMPLING, 1)])[0]
    b = engine.generate([Request(TEMPLATE.prefix, SAMPLING, 1)])[0]
    assert a == b
    greedy = Sampling(temperature=0.0, max_tokens=16)
    g = engine.generate([Request(TEMPLATE.prefix, greedy, 1), Request(TEMPLATE.prefix, greedy, 2)])
    assert g[0].text == g[1].text, "greedy decoding ignores the seed"


def test_transformers_engine_is_batch_invariant(tiny_model_path):
    engine = load_engine("transformers", tiny_model_path, dtype="float32")
    check_batch_invariance(engine)
    check_seed_and_greedy(engine)


def test_transformers_engine_honours_stop_strings(tiny_model_path):
    engine = load_engine("transformers", tiny_model_path, dtype="float32")
    free = engine.generate([Request(TEMPLATE.prefix, Sampling(1.0, 1.0, 24), 5)])[0]
    assert free.text, "an unconstrained sample should not be empty"
    stop = free.text[len(free.text) // 2 :][:2]
    cut = engine.generate([Request(TEMPLATE.prefix, Sampling(1.0, 1.0, 24, (stop,)), 5)])[0]
    assert cut.finish_reason == "stop"
    assert stop not in cut.text
    assert free.text.startswith(cut.text)


@pytest.mark.vllm
def test_vllm_engine_is_batch_invariant(vllm_engine):
    check_batch_invariance(vllm_engine)
    check_seed_and_greedy(vllm_engine)
    info = vllm_engine.info()
    assert info.engine == "vllm" and info.device == "cpu" and info.dtype == "float32"


@pytest.mark.vllm
def test_vllm_reports_rows_as_they_finish_within_one_chunk(vllm_engine):
    """A stage's bar moves while one large chunk runs (vLLM's own per-request hook), and watching changes nothing."""
    reqs = requests()
    vllm_engine.batch_size = 256  # one chunk
    quiet = vllm_engine.generate(reqs)
    calls: list[tuple[int, int]] = []
    watched = vllm_engine.generate(reqs, progress=lambda rows, tokens: calls.append((rows, tokens)))
    assert watched == quiet
    assert sum(r for r, _ in calls) == len(reqs) and sum(t for _, t in calls) == sum(c.completion_tokens for c in quiet)
    assert len([r for r, _ in calls if r]) == len(reqs)  # one report per finished request, not one per chunk
