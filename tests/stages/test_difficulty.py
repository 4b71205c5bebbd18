"""Stage 6: difficulty by self-consistency or a scorer, then seeded, order-free sampling."""

from __future__ import annotations

import hashlib
import random

import pytest
from stagekit import FakeEngine, make_ctx, make_stage, question

from scalequest_dataset.recipe.ids import derive_seed, uniform
from scalequest_dataset.recipe.prompts import response_instruction
from scalequest_dataset.stages.difficulty import KEEP_STREAM, bucket_of

RESPONSE_PROMPT_OF_Q = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nQ1\n"
    "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
)

# Per question, the k=4 samples' replies; equivalent answers in different spellings.
SAMPLES = {
    "Q1": ["so \\boxed{\\frac{1}{2}}", "The answer is 0.5.", "\\boxed{3}", "I give up."],  # 2 of 4 agree
    "Q2": ["\\boxed{7}", "\\boxed{7}", "the answer is $7$", "\\boxed{7.0}"],  # all agree
    "Q3": ["no idea", "still none", "\\boxed{unbalanced", "nothing"],  # no answer at all
    "Q4": ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}", "\\boxed{4}"],  # all disagree
}


def sampler(seeds: dict[int, tuple[str, int]]):
    def reply(request) -> str:
        query, k = seeds[request.seed]
        return SAMPLES[query][k]
    return reply


def self_consistency(rows, keep=None, seed=7):
    stage = make_stage("difficulty", {"method": "self-consistency", "model": "org/sampler", "samples": 4,
                                      "temperature": 0.6, "top_p": 0.9, "max_tokens": 99,
                                      "keep": keep or {}}, seed=seed)
    seeds = {derive_seed(seed, "difficulty", r["id"], k): (r["query"], k) for r in rows for k in range(4)}
    engine = FakeEngine(reply=sampler(seeds))
    ctx, calls = make_ctx(stage, engine)
    return stage.process([dict(r) for r in rows], ctx), engine, calls


ROWS = [question(f"qwen2-math-qgen-0000000{i}", q) for i, q in enumerate(SAMPLES)]


def test_self_consistency_difficulty_is_one_minus_the_largest_agreeing_share():
    result, _, _ = self_consistency(ROWS)
    by_query = {r["query"]: r for r in result.rows}
    assert by_query["Q1"]["difficulty"] == 0.5
    assert by_query["Q2"]["difficulty"] == 0.0
    assert by_query["Q3"]["difficulty"] == 1.0  # unanswered samples agree with nothing
    assert by_query["Q4"]["difficulty"] == 0.75
    assert by_query["Q1"]["difficulty_answers"] == ["\\frac{1}{2}", "0.5", "3", None]
    assert by_query["Q2"]["difficulty_bucket"] == 0 and by_query["Q3"]["difficulty_bucket"] == 4


def test_samples_use_the_response_prompt_and_per_sample_seeds():
    _, engine, calls = self_consistency(ROWS[:1])
    assert calls.overrides == [{}]
    assert [r.prompt for r in engine.requests] == [RESPONSE_PROMPT_OF_Q] * 4
    assert [r.seed for r in engine.requests] == [derive_seed(7, "difficulty", ROWS[0]["id"], k) for k in range(4)]
    assert {(r.sampling.temperature, r.sampling.top_p, r.sampling.max_tokens) for r in engine.requests} == {
        (0.6, 0.9, 99)}


def test_chat_prompt_mode_uses_the_samplers_template():
    stage = make_stage("difficulty", {"model": "org/sampler", "samples": 2, "prompt": "chat"})
    engine = FakeEngine(reply=lambda r: "\\boxed{1}")
    ctx, _ = make_ctx(stage, engine)
    stage.process([question("deepseek-qgen-00000000", "Q1")], ctx)
    assert engine.requests[0].prompt == engine.chat_prompt([{"role": "user", "content": response_instruction("Q1")}])
    assert engine.requests[0].sampling.stop == ()


def test_buckets_are_half_open_on_the_left():
    edges = [0.2, 0.4, 0.6, 0.8]
    assert [bucket_of(x, edges) for x in (0.0, 0.19, 0.2, 0.5, 0.8, 1.0)] == [0, 0, 1, 2, 4, 4]


def test_keep_table_samples_only_its_generator():
    rows = [question(f"deepseek-qgen-0000000{i}", q) for i, q in enumerate(SAMPLES)] + ROWS
    # deepseek: drop every question in the easiest bucket, keep the rest; qwen2 is not listed: keep all.
    result, _, _ = self_consistency(rows, keep={"deepseek-qgen": [0.0, 1.0, 1.0, 1.0, 1.0]})
    assert [(r["generator"], r["query"]) for r in result.dropped] == [("deepseek-qgen", "Q2")]
    assert result.dropped[0]["drop_reason"] == "easy-sampled-out"
    assert len(result.rows) == 7
    assert all(r["keep_draw"] == uniform(7, KEEP_STREAM, r["id"]) for r in result.rows + result.dropped)


def scorer_stage(keep):
    return make_stage("difficulty", {"method": "scorer", "scorer": "org/scorer", "keep": keep})


def score_by_text(conversation) -> float:
    # A deterministic stand-in for a regression head; overshoots [0, 1] on purpose.
    digest = hashlib.blake2b(conversation[0]["content"].encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") / 2**32 * 1.4 - 0.2


def many_rows(n=200):
    return [question(f"{g}-{i:08d}", f"question number {i} of {g}") for g in ("deepseek-qgen", "qwen2-math-qgen")
            for i in range(n)]


def sample_ids(rows, cut):
    stage = scorer_stage({"deepseek-qgen": [0.1, 0.3, 0.5, 0.8, 1.0]})
    engine = FakeEngine(score=score_by_text)
    ctx, calls = make_ctx(stage, engine)
    kept, dropped = [], []
    for i in range(0, len(rows), cut):
        result = stage.process(rows[i : i + cut], ctx)
        kept += result.rows
        dropped += result.dropped
    return kept, dropped, calls


def test_scorer_is_clamped_and_loaded_as_a_score_model():
    kept, dropped, calls = sample_ids(many_rows(20), 40)
    assert {o.get("task") for o in calls.overrides} == {"score"}
    scores = [r["difficulty"] for r in kept + dropped]
    assert min(scores) == 0.0 and max(scores) == 1.0 and all(0 <= s <= 1 for s in scores)
    assert all(r["difficulty_answers"] is None for r in kept)


def test_sampling_is_independent_of_row_order_and_shard_cut():
    rows = many_rows()
    kept, dropped, _ = sample_ids(rows, len(rows))
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    for cut in (1, 7, 64):
        other_kept, other_dropped, _ = sample_ids(shuffled, cut)
        assert sorted((r["id"], r["keep_draw"]) for r in other_kept) == sorted((r["id"], r["keep_draw"]) for r in kept)
        assert sorted(r["id"] for r in other_dropped) == sorted(r["id"] for r in dropped)
    # The table bites: only deepseek rows are sampled out, and mostly easy ones.
    assert dropped and {r["generator"] for r in dropped} == {"deepseek-qgen"}
    easy = [r for r in kept + dropped if r["generator"] == "deepseek-qgen" and r["difficulty_bucket"] == 0]
    hard = [r for r in kept + dropped if r["generator"] == "deepseek-qgen" and r["difficulty_bucket"] == 4]
    assert all(r in kept for r in hard)
    assert sum(r in dropped for r in easy) > len(easy) / 2


@pytest.mark.parametrize("seed", [0, 1])
def test_the_keep_draw_depends_on_the_run_seed(seed):
    stage = make_stage("difficulty", {"method": "scorer", "scorer": "org/scorer"}, seed=seed)
    assert stage.decide({"id": "x-00000000"}, 0.5)["keep_draw"] == uniform(seed, KEEP_STREAM, "x-00000000")


class _WaitsForAnswers(FakeEngine):
    """Reports each completion as it finishes, then (before returning) waits until the stage's answer thread has
    worked on the first one: the answers overlap the engine call, or this times out."""

    def __init__(self, reply, seen) -> None:
        super().__init__(reply=reply)
        self.seen = seen
        self.overlapped = False

    def generate(self, requests, progress=None, done=None):
        import time

        out = super().generate(requests, progress, done)
        deadline = time.monotonic() + 10
        while not self.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        self.overlapped = bool(self.seen)
        return out


def test_answers_are_worked_out_while_the_engine_generates_with_the_same_values(monkeypatch):
    from scalequest_dataset.recipe import answers

    seen: list[str] = []
    real = answers.extract_answer
    monkeypatch.setattr(answers, "extract_answer", lambda text: seen.append(text) or real(text))
    expected, _, _ = self_consistency(ROWS)  # the same stage: values computed as the engine reports them
    seen.clear()
    stage = make_stage("difficulty", {"method": "self-consistency", "model": "org/sampler", "samples": 4,
                                      "temperature": 0.6, "top_p": 0.9, "max_tokens": 99, "keep": {}}, seed=7)
    seeds = {derive_seed(7, "difficulty", r["id"], k): (r["query"], k) for r in ROWS for k in range(4)}
    engine = _WaitsForAnswers(sampler(seeds), seen)
    ctx, _ = make_ctx(stage, engine)
    result = stage.process([dict(r) for r in ROWS], ctx)
    assert engine.overlapped  # an answer was extracted before generate returned
    assert result.rows == expected.rows and result.dropped == expected.dropped
    # and they are the answers of the texts in sample order, as a serial pass gives them
    by_query = {r["query"]: r for r in result.rows}
    assert all(by_query[q]["difficulty_answers"] == [real(t) for t in SAMPLES[q]] for q in by_query)


def test_an_answer_past_the_deadline_fails_the_shard(monkeypatch):
    import time

    from scalequest_dataset.recipe import answers
    from scalequest_dataset.stages import difficulty

    monkeypatch.setattr(answers, "VERIFY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(difficulty, "self_consistency_difficulty", lambda a: time.sleep(3) or 0.0)
    started = time.monotonic()
    with pytest.raises(answers.AnswerTimeout, match=r"ran past 0\.3 s"):
        self_consistency(ROWS)
    assert time.monotonic() - started < 2.5  # the watch fired; it did not wait for the stuck thread
