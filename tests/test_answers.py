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
