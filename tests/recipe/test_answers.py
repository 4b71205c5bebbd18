"""Final-answer extraction and equivalence, shared by self-consistency difficulty and rewards."""

from __future__ import annotations

import pytest

from scalequest_dataset.recipe.answers import agreement_shares, equivalent, extract_answer, largest_agreement


@pytest.mark.parametrize("text,answer", [
    ("so \\boxed{\\frac{1}{2}} done", "\\frac{1}{2}"),
    ("first \\boxed{1}, then \\boxed{x^{2}+1}", "x^{2}+1"),  # the last one, braces balanced
    ("\\boxed {5}", "5"),
    ("\\boxed{3} and then \\boxed{cut off", "3"),  # an unfinished box falls back to the last complete one
    ("The answer is $42$.", "42"),
    ("the answer is: 7\nBut wait", "7"),
    ("The answer is 1. Actually, the final answer is 2.", "2"),
    ("nothing here", None),
    ("\\boxed{}", None),
    ("\\boxed{unbalanced", None),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


@pytest.mark.parametrize("a,b,same", [
    ("\\frac{1}{2}", "0.5", True),
    ("42", "42.0", True),
    ("x=3", "3", True),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("Banana", "banana", True),  # string fallback when math_verify cannot parse
    ("1, 2", "1,2", True),
    ("3", "4", False),
    ("(1,2)", "(2,1)", False),
    (None, None, False),
    ("3", None, False),
])
def test_equivalent(a, b, same):
    assert equivalent(a, b) is same
    assert equivalent(b, a) is same


def test_largest_agreement_counts_missing_answers_as_disagreeing():
    assert largest_agreement(["1/2", "0.5", None, "3", "\\frac12"]) == 3
    assert largest_agreement([None, None]) == 0
    assert agreement_shares(["1/2", "0.5", None, "3"]) == pytest.approx([1 / 3, 1 / 3, 0.0, 0.0])
    assert agreement_shares(["7"]) == [0.0]


PLAIN = ["3", "3.0", "03", "-3", "3/4", "\\frac{3}{4}", "\\dfrac{3}{4}", "0.75", "6/8", "0.7500", "1/3", "0.3333",
         "0.333333", "2", "2.5", "5/2", "\\frac{10}{4}", "1000000", "1000001", "12", "-\\frac{3}{4}", "-0.75"]


def _math_verify_alone(a: str, b: str) -> bool:
    """The verdict without the fast path or the caches: normalised equality, else math_verify either way round."""
    from math_verify import parse, verify

    from scalequest_dataset.recipe.answers import normalize_answer

    if normalize_answer(a) == normalize_answer(b):
        return True
    pa, pb = parse(f"${a}$", parsing_timeout=None), parse(f"${b}$", parsing_timeout=None)
    return bool(pa and pb and (verify(pa, pb, timeout_seconds=None) or verify(pb, pa, timeout_seconds=None)))


def test_plain_numbers_skip_math_verify_and_agree_with_it(monkeypatch):
    from scalequest_dataset.recipe import answers

    expected = {(a, b): _math_verify_alone(a, b) for a in PLAIN for b in PLAIN}
    answers._equivalent.cache_clear()
    calls = []
    real = answers._math_verify()
    monkeypatch.setattr(answers, "_math_verify", lambda: calls.append(1) or real)
    got = {(a, b): equivalent(a, b) for a in PLAIN for b in PLAIN}
    assert got == expected
    near = {p for p in expected if answers.plain_number(p[0]) is not None and answers.plain_number(p[1]) is not None
            and abs(answers.plain_number(p[0]) - answers.plain_number(p[1])) <= answers._NEAR}
    assert len(calls) <= 2 * len(near)  # only pairs too close to call exactly reach math_verify


def test_verdicts_are_cached(monkeypatch):
    from scalequest_dataset.recipe import answers

    answers._equivalent.cache_clear()
    calls = []
    parse, verify = answers._math_verify()
    monkeypatch.setattr(answers, "_math_verify", lambda: (parse, lambda *a, **k: calls.append(1) or verify(*a, **k)))
    assert equivalent("x+1", "1+x") and equivalent("1+x", "x+1") and equivalent("x+1", "1+x")
    assert len(calls) == 1


def test_a_verify_call_that_runs_out_of_time_fails_loudly(monkeypatch):
    import time

    from scalequest_dataset.recipe import answers

    answers._equivalent.cache_clear()
    parse, _ = answers._math_verify()

    def slow(*args, **kwargs):
        time.sleep(2)
        return False

    answers._parsed("x+2"), answers._parsed("y")  # parsed (and cached) first: only the verify call is slow
    monkeypatch.setattr(answers, "VERIFY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(answers, "_math_verify", lambda: (parse, slow))
    with pytest.raises(answers.AnswerTimeout, match="'x\\+2' vs 'y'"):
        equivalent("x+2", "y")
