"""Helpers for the decontamination tests: a brute-force oracle (sets of word tuples, no hashing, no index) that
the stage's answers are checked against, and benchmark fixtures as local JSONL files."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scalequest_dataset.stages.decontamination import words


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
