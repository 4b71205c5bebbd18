"""Stage 5: the judge prompt verbatim in the judge's chat template, greedy, and the two verdict rules."""

from __future__ import annotations

import pytest
from stagekit import FakeEngine, make_ctx, make_stage, question

from scalequest_dataset.stages.solvability import final_verdict, substring_yes

# The paper's judge prompt (reference/scalequest-paper.md): TABs after "1." and "2.", stripped.
EXPECTED_USER = (
    "Please act as a professional math teacher.\n"
    "Your goal is to determine if the given problem is a valuable math problem. You need to consider two "
    "aspects:\n"
    "1.\tThe given problem is a math problem.\n"
    "2.\tThe given math problem can be solved based on the conditions provided in the problem (You can first "
    "try to solve it and then judge its solvability).\n"
    "\n"
    "Please reason step by step and conclude with either 'Yes' or 'No'.\n"
    "\n"
    "Given Problem: What is 1 + 1?"
)
# ...rendered by the judge's own chat template (the fake engine's is ChatML, like Qwen2-Math-Instruct's).
EXPECTED_PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    f"<|im_start|>user\n{EXPECTED_USER}<|im_end|>\n"
    "<|im_start|>assistant\n"
)

OUTPUTS = {
    "a": "Yes",
    "b": "Let me check. No. Final: Yes",
    "c": "I cannot tell whether this can be solved.",
    "d": "Yesterday's price is unknown, so: No",
    "e": "Yes, it is a math problem, but a condition is missing. No.",
    "f": "no",
}


def judge(request) -> str:
    key = request.prompt.split("Given Problem: ")[1][0]
    return OUTPUTS[key]


ROWS = [question(f"qwen2-math-qgen-0000000{i}", f"{key} problem") for i, key in enumerate(OUTPUTS)]


def run(rule: str):
    stage = make_stage("solvability", {"model": "org/judge", "rule": rule, "max_tokens": 333})
    engine = FakeEngine(reply=judge)
    ctx, calls = make_ctx(stage, engine)
    return stage.process([dict(r) for r in ROWS], ctx), engine, calls


@pytest.mark.parametrize("output,substring,final", [
    ("Yes", True, True),
    ("... No. Final: Yes", True, True),
    ("I cannot tell.", False, False),
    ("Yesterday it rained. No", True, False),
    ("Yes, but then again: no.", True, False),
    ("YES!", True, True),
    ("The answer: no", False, False),
    ("", False, False),
])
def test_rules(output, substring, final):
    assert substring_yes(output) is substring
    assert final_verdict(output) is final


def test_prompt_is_the_paper_verbatim_in_the_chat_template():
    stage = make_stage("solvability", {"model": "org/judge"})
    engine = FakeEngine(reply=lambda r: "Yes")
    ctx, _ = make_ctx(stage, engine)
    stage.process([question("qwen2-math-qgen-00000000", "What is 1 + 1?")], ctx)
    assert engine.requests[0].prompt == EXPECTED_PROMPT


def test_judging_is_greedy_with_the_configured_budget():
    _, engine, calls = run("substring-yes")
    assert calls.overrides == [{}]  # a generation engine, nothing special
    assert {r.sampling.temperature for r in engine.requests} == {0.0}
    assert {r.sampling.max_tokens for r in engine.requests} == {333}


def test_substring_yes_keeps_any_yes():
    result, _, _ = run("substring-yes")
    assert [r["query"][0] for r in result.rows] == ["a", "b", "d", "e"]
    assert [r["query"][0] for r in result.dropped] == ["c", "f"]
    assert {r["drop_reason"] for r in result.dropped} == {"unsolvable"}


def test_final_verdict_reads_the_last_yes_or_no():
    result, _, _ = run("final-verdict")
    assert [r["query"][0] for r in result.rows] == ["a", "b"]
    assert [r["query"][0] for r in result.dropped] == ["c", "d", "e", "f"]


def test_rows_keep_their_columns_and_the_verdict_text():
    result, _, _ = run("final-verdict")
    row = result.rows[1]
    assert {k: row[k] for k in ROWS[1]} == ROWS[1]
    assert row["judge_output"] == OUTPUTS["b"]
    assert row["solvable"] is True and row["judge_finish_reason"] == "stop"
    assert result.dropped[0]["solvable"] is False and result.dropped[0]["judge_output"] == OUTPUTS["c"]
