"""The exact strings the paper's models see, for both generator families, compared with literals copied
from the paper reference (not rebuilt from the constants under test)."""

from __future__ import annotations

from stagekit import FakeEngine, make_ctx, make_stage

QWEN_PREFIX = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
QWEN_STOP = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
DEEPSEEK_PREFIX = "<｜begin▁of▁sentence｜>User: "
DEEPSEEK_STOP = ("<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>")
RESPONSE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "Tom has {3} apples.\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_literals_use_the_paper_characters():
    assert "\uff5c" in DEEPSEEK_PREFIX and "\u2581" in DEEPSEEK_PREFIX and DEEPSEEK_PREFIX.endswith(": ")
    assert "\\boxed{}" in RESPONSE  # one backslash in the text the model sees


def test_question_stage_sends_each_family_its_pre_query_template():
    stage = make_stage("questions")  # generators: qwen2-math-qgen (qwen), deepseek-qgen (deepseek)
    engine = FakeEngine(reply=lambda r: "  A question?\n")
    ctx, _ = make_ctx(stage, engine)
    for gen, prefix, stop in [("qwen2-math-qgen", QWEN_PREFIX, QWEN_STOP),
                              ("deepseek-qgen", DEEPSEEK_PREFIX, DEEPSEEK_STOP)]:
        engine.requests.clear()
        descriptor = next(d for d in stage.source_plan() if d["generator"] == gen)
        result = stage.process(stage.source_rows(descriptor), ctx)
        assert {r.prompt for r in engine.requests} == {prefix}
        assert {r.sampling.stop for r in engine.requests} == {stop}
        assert {(r.sampling.temperature, r.sampling.top_p) for r in engine.requests} == {(1.0, 0.99)}
        assert {r["query"] for r in result.rows} == {"A question?"}  # stripped


def test_responses_use_the_raw_response_prompt_verbatim():
    stage = make_stage("responses", {"model": "org/solver", "samples": 1})
    engine = FakeEngine(reply=lambda r: "\\boxed{3}")
    ctx, _ = make_ctx(stage, engine)
    row = {"id": "deepseek-qgen-00000000", "generator": "deepseek-qgen", "query": "Tom has {3} apples."}
    stage.process([row], ctx)
    # Raw text, never re-templated: the same string whatever the engine's chat template.
    assert engine.requests[0].prompt == RESPONSE
