"""Stage 7: k seeded samples per question, then the released answer-format filter."""

from __future__ import annotations

from stagekit import FakeEngine, make_ctx, make_stage, question

from scalequest_dataset.recipe.ids import derive_seed, response_id
from scalequest_dataset.stages import StageContext

REPLIES = ["So the result is \\boxed{4}.", "The answer is 4.", "Hence the final answer is 4",
           "I think it is 4.", "The Answer Is 4", "FINAL ANSWER IS 4"]


def reply(request) -> str:
    return REPLIES[request.seed % len(REPLIES)]


def run(samples=6, **section):
    stage = make_stage("responses", {"model": "org/solver", "samples": samples, "temperature": 0.7,
                                     "top_p": 0.95, "max_tokens": 77, **section})
    engine = FakeEngine(reply=reply)
    ctx, _ = make_ctx(stage, engine)
    rows = [question("qwen2-math-qgen-00000001", "What is 2+2?", difficulty=0.25),
            question("deepseek-qgen-00000000", "What is 1+3?")]
    return stage, stage.process(rows, ctx), engine


def test_one_request_per_sample_with_its_own_seed():
    _, _, engine = run()
    assert len(engine.requests) == 12
    qid = "qwen2-math-qgen-00000001"
    expected = [derive_seed(7, "responses", response_id(qid, k), 0) for k in range(6)]
    assert [r.seed for r in engine.requests[:6]] == expected
    assert len(set(expected)) == 6
    assert {(r.sampling.temperature, r.sampling.top_p, r.sampling.max_tokens) for r in engine.requests} == {
        (0.7, 0.95, 77)}


def test_ids_and_columns():
    _, result, _ = run()
    every = sorted(result.rows + result.dropped, key=lambda r: r["id"])
    assert [r["id"] for r in every[6:]] == [f"qwen2-math-qgen-00000001-r{k}" for k in range(6)]
    row = next(r for r in every if r["id"] == "qwen2-math-qgen-00000001-r2")
    assert row["question_id"] == "qwen2-math-qgen-00000001" and row["sample"] == 2
    assert row["generator"] == "qwen2-math-qgen" and row["query"] == "What is 2+2?"
    assert row["difficulty"] == 0.25
    assert row["seed"] == derive_seed(7, "responses", "qwen2-math-qgen-00000001-r2")
    assert row["response"] == REPLIES[row["seed"] % len(REPLIES)]
    assert next(r for r in every if r["question_id"].startswith("deepseek"))["difficulty"] is None


def test_answer_format_filter_is_the_released_one():
    _, result, _ = run()
    # Markers are matched case-sensitively, as the released code does ("he answer is" also matches "The").
    for row in result.rows:
        assert row["has_answer_format"] is True
        assert row["response"] in REPLIES[:3]
    for row in result.dropped:
        assert row["has_answer_format"] is False
        assert row["drop_reason"] == "no-final-answer"
        assert row["response"] in REPLIES[3:]
    assert result.rows and result.dropped


def test_progress_counts_questions_not_requests():
    stage = make_stage("responses", {"model": "org/solver", "samples": 3})
    reports: list[tuple[int, int]] = []
    ctx = StageContext(stage.config, lambda model, **kw: FakeEngine(reply=reply),
                       lambda rows, tokens: reports.append((rows, tokens)))
    stage.process([question(f"deepseek-qgen-0000000{i}", "Q") for i in range(4)], ctx)
    assert sum(rows for rows, _ in reports) == 4  # the bar is sized in input rows
    assert sum(tokens for _, tokens in reports) > 0


# The replies to samples 0, 1, 2 of one question, in request order.
PADDED = ["\n  The answer is 4.  \n",  # padding around a kept answer
          "The result is 4\n",  # the marker "is 4\n" exists only in the padded text
          "  \t\n "]  # whitespace only


def test_responses_are_stripped_as_the_release_before_the_filter_the_scoring_and_the_output():
    stage = make_stage("responses", {"model": "org/solver", "samples": 3,
                                     "answer_markers": ["he answer is", "is 4\n"]})
    replies = iter(PADDED)
    ctx, _ = make_ctx(stage, FakeEngine(reply=lambda request: next(replies)))
    result = stage.process([question("deepseek-qgen-00000000", "What is 2+2?")], ctx)
    out = {r["sample"]: r for r in result.rows + result.dropped}
    assert [out[k]["response"] for k in range(3)] == [text.strip() for text in PADDED]  # str.strip(), as gen.py
    assert [r["sample"] for r in result.rows] == [0]
    assert out[1]["has_answer_format"] is False and out[1]["drop_reason"] == "no-final-answer"  # read after strip
    assert out[2]["response"] == "" and out[2]["drop_reason"] == "no-final-answer"
    # What the reward model scores is the stripped text too: the reward stage reads the `response` column.
    reward = make_stage("reward", {"method": "reward-model", "model": "org/reward"})
    engine = FakeEngine(score=lambda conversation: 1.0)
    reward.process(result.rows, make_ctx(reward, engine)[0])
    assert [c[-1]["content"] for c in engine.scored] == ["The answer is 4."]


def test_the_stripping_moved_the_code_version_so_old_runs_are_not_reused(monkeypatch):
    from scalequest_dataset.recipe.params import fingerprint
    from scalequest_dataset.stages.responses import ResponsesStage

    assert ResponsesStage.version == "3"  # 3: prompt tokens per response
    stage = make_stage("responses", {"model": "org/solver"})
    now = (stage.fingerprint("difficulty", None), stage.config_payload("difficulty"))
    monkeypatch.setattr(ResponsesStage, "version", "1")  # the code before the release's strip was adopted
    before = (stage.fingerprint("difficulty", None), stage.config_payload("difficulty"))
    assert before[0] != now[0] and before[1]["code_version"] == "1"
    assert fingerprint(before[1]) != fingerprint(now[1])  # the key a run directory's plan is matched by
