"""The funnel reads by units: a stage that fans out (responses: k per question) shows questions in, responses made
and responses kept, with kept out of made; one that fans in (default: best of k) shows responses in and questions
out, with no percentage; no percentage ever exceeds 100%."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scalequest_dataset.run.funnel import format_cost, format_funnel, funnel
from scalequest_dataset.run.records import Cost, Counts, Manifest, ManifestExecution, Tokens
from scalequest_dataset.stages import STAGE_ORDER


def manifest(stage: str, rows_in: int, rows_out: int, dropped: dict[str, int] | None = None) -> Manifest:
    """Just what the funnel reads (counts, tokens, cost): a manifest built without the rest."""
    return Manifest.model_construct(stage=stage, counts=Counts(rows_in=rows_in, rows_out=rows_out,
                                                               dropped=dropped or {}),
                                    tokens=Tokens(completion=10), execution=ManifestExecution(cost=Cost(wall_seconds=1)))


# The demo: 25 questions, 2 samples each = 50 responses, 27 kept; then best of k: 13 questions.
DEMO = {
    "questions": manifest("questions", 40, 40),
    "solvability": manifest("solvability", 40, 25, {"unsolvable": 15}),
    "responses": manifest("responses", 25, 27, {"no-final-answer": 23}),
    "reward": manifest("reward", 27, 27),
    "default": manifest("default", 27, 13),
}


def cells(table: str, stage: str) -> list[str]:
    """A row of the table cut at two or more spaces (cells hold "25 questions")."""
    line = next(x for x in table.splitlines() if x.startswith(stage + " "))
    return re.split(r"\s{2,}", line.strip())


def test_responses_show_questions_in_responses_made_and_kept():
    rows = {r.stage: r for r in funnel(DEMO)}
    r = rows["responses"]
    assert (r.rows_in, r.unit_in, r.generated, r.rows_out, r.unit_out) == (25, "question", 50, 27, "response")
    assert r.fans_out and r.kept == pytest.approx(27 / 50)
    assert cells(format_funnel(list(rows.values())), "responses")[:5] == [
        "responses", "25 questions", "50 responses", "27 responses", "54%"]


def test_default_shows_responses_in_and_questions_out_without_a_percentage():
    r = {r.stage: r for r in funnel(DEMO)}["default"]
    assert (r.rows_in, r.unit_in, r.rows_out, r.unit_out) == (27, "response", 13, "question")
    assert not r.filters and not r.fans_out and r.kept is None
    assert cells(format_funnel([r]), "default")[:5] == ["default", "27 responses", "-", "13 questions", "-"]


def test_a_plain_filter_shows_no_made_column_and_kept_of_in():
    r = {r.stage: r for r in funnel(DEMO)}["solvability"]
    assert not r.fans_out
    assert cells(format_funnel([r]), "solvability")[:5] == ["solvability", "40 questions", "-", "25 questions",
                                                             "62%"]
    assert "unsolvable: 15" in format_funnel([r])


def test_one_sample_per_question_still_shows_what_was_made():
    """k = 1: as many responses as questions, but of another unit: kept is out of the responses made."""
    r = funnel({"responses": manifest("responses", 25, 20, {"no-final-answer": 5})})[0]
    assert r.fans_out and cells(format_funnel([r]), "responses")[2] == "25 responses"


def test_singular_units_and_empty_stages():
    rows = funnel({"responses": manifest("responses", 1, 0, {"no-final-answer": 1}),
                   "default": manifest("default", 0, 0)})
    table = format_funnel(rows)
    assert cells(table, "responses")[1:5] == ["1 question", "1 response", "0 responses", "0%"]
    assert cells(table, "default")[1:5] == ["0 responses", "-", "0 questions", "-"]


@given(st.sampled_from(STAGE_ORDER), st.integers(0, 10**6), st.integers(0, 10**6), st.integers(0, 10**6))
def test_percentages_never_exceed_what_they_claim(stage, rows_in, kept, dropped):
    """Whatever the counts, kept is a share of made (kept + dropped), at most 100%."""
    (row,) = funnel({stage: manifest(stage, rows_in, kept, {"x": dropped} if dropped else {})})
    if row.kept is not None:
        assert 0 <= row.kept <= 1
    for percent in re.findall(r"(\d+)%", format_funnel([row])):
        assert int(percent) <= 100



def test_the_cost_table_reads_each_stage_manifest():
    m = manifest("responses", 25, 27).model_copy(update={
        "tokens": Tokens(prompt=1234, completion=56789),
        "execution": ManifestExecution(cost=Cost(wall_seconds=12.34, worker_seconds=24.5, gpu_seconds=3.0,
                                                 answer_seconds=1.26))})
    table = format_cost({"questions": manifest("questions", 40, 40), "responses": m})
    assert table.splitlines()[0].split() == ["stage", "plan", "s", "wall", "s", "worker", "s", "GPU", "s", "answers",
                                             "s", "tokens", "in", "tokens", "out"]
    assert table.splitlines()[2].split() == ["responses", "0.0", "12.3", "24.5", "3.0", "1.3", "1,234", "56,789"]
