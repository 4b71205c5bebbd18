"""Helpers for the decontamination tests: a brute-force oracle (sets of word tuples, no hashing, no index) that
the stage's answers are checked against, and benchmark fixtures as local JSONL files."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stagekit import question

from scalequest_dataset.stages.decontamination import words

# GSM 0 has 17 words (five 13-grams); the questions below copy 13, 12 or all of them.
GSM = ["Natalia sold clips to 48 of her friends in April and then half as many in May.",
       "Weng earns $12 an hour for babysitting; yesterday she did 50 minutes of babysitting. How much did she earn?",
       "Too short to have a 13-gram."]
MATH = ["Let f(x) = 3x^2 - 5x + 2 and g(x) = 7 - x; compute f(g(2)) and write your answer as an integer.",
        "Find the area of a triangle whose vertices are the points (0, 0), (4, 0) and (0, 3) in the plane."]
MATH500 = [MATH[1]]  # a subset of MATH, as MATH-500 is


def q(i: int, text: str) -> dict:
    return question(f"deepseek-qgen-{i:08d}", text)


QUESTIONS = [
    q(1, "NATALIA sold clips to 48 of her friends, in April, and then half as many - a story."),  # 13 words of GSM 0
    q(2, "sold clips to 48 of her friends in April and then half as"),  # 13 words (its second 13-gram)
    q(3, "Natalia sold clips to 48 of her friends in April and then"),  # 12 words: no 13-gram
    q(4, "Ｆind the area of a triangle whose vertices are the points (0,0), (4,0) and (0,3)!"),  # NFKC: MATH 1
    q(5, "What is 2 + 2?"),
    q(6, "weng earns 12 an hour for babysitting yesterday she did 50 minutes of babysitting and more"),
    q(7, "Natalia sold clips to 48 of her friends in April and then half as many in May."),  # all of it
]


def grams(text: str | None, n: int) -> set[tuple[str, ...]]:
    w = words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def oracle(questions: Mapping[str, str], benchmarks: Sequence[tuple[str, Sequence[tuple[str, Sequence[str]]]]],
           n: int) -> dict[str, list[tuple[str, str]]]:
    """question id -> every (benchmark, item id) sharing an n-gram with it, by brute force.
    `benchmarks`: [(name, [(item id, [text per column]), ...]), ...]."""
    out: dict[str, list[tuple[str, str]]] = {}
    for qid, text in questions.items():
        mine = grams(text, n)
        found = [(name, item) for name, items in benchmarks for item, texts in items
                 if any(mine & grams(t, n) for t in texts)]
        if found:
            out[qid] = found
    return out


def clean_ratio(found: Mapping[str, list[tuple[str, str]]], name: str, items: int) -> float:
    matched = {item for pairs in found.values() for bench, item in pairs if bench == name}
    return (items - len(matched)) / items


def write_jsonl(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
