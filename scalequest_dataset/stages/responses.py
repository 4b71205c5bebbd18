"""Stage 7 of the paper: k responses per question (k requests with n=1 each, as the released code sends),
the raw Qwen-format response prompt verbatim, each response stripped of surrounding whitespace as the
release does (`response[0].strip()` in gen.py) before anything else reads it, then the released
answer-format filter: a response is kept iff it contains one of "boxed", "he answer is", "final answer is"."""

from __future__ import annotations

from typing import Any, ClassVar

import datasets
from pydantic import Field

from ..engines import Request, Sampling
from ..engines.base import generate_guarded
from ..recipe.ids import derive_seed, response_id
from ..recipe.params import ModelSpec, Strict
from ..recipe.prompts import RESPONSE_PROMPT, response_prompt
from .base import (
    EXACT,
    Note,
    ShardResult,
    Stage,
    StageContext,
    length_figure,
    rejected,
    token_counts,
    token_sum,
    with_drop_reason,
)
from .difficulty import CHATML_STOP


class Params(Strict):
    """Stage 7: k samples per question (one request each), then the released answer-format filter."""

    model: ModelSpec
    samples: int = Field(5, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(2048, ge=1)
    answer_markers: list[str] = Field(default_factory=lambda: ["boxed", "he answer is", "final answer is"])


FEATURES = datasets.Features({
    "id": datasets.Value("string"),  # "{question_id}-r{sample}"
    "question_id": datasets.Value("string"),
    "generator": datasets.Value("string"),  # the question's generator
    "query": datasets.Value("string"),
    "response": datasets.Value("string"),
    "sample": datasets.Value("int32"),
    "seed": datasets.Value("int64"),
    "finish_reason": datasets.Value("string"),
    "prompt_tokens": datasets.Value("int32"),
    "completion_tokens": datasets.Value("int32"),
    "has_answer_format": datasets.Value("bool"),
    "difficulty": datasets.Value("float64"),  # the question's, when the run has a difficulty stage
})


class ResponsesStage(Stage):
    name = "responses"
    statistics: ClassVar[dict[str, str]] = {"question_id": "id"}  # the diff's statistics (diffing/stats.py)
    paper: ClassVar[dict[str, Any]] = {
        "model": "Qwen/Qwen2-Math-7B-Instruct", "samples": 5, "temperature": 0.7, "top_p": 0.95, "max_tokens": 2048,
        "answer_markers": ["boxed", "he answer is", "final answer is"]}
    figures = (length_figure("response"),)

    @classmethod
    def card_notes(cls, p: dict[str, Any]) -> list[Note]:
        departs = cls.departures(p)
        exact = [] if departs else [(EXACT, "5 samples per question (one request each), T=0.7, top_p=0.95, max 2048 "
                                            "tokens, the paper's prompt verbatim")]
        return [*exact, *departs,
                (EXACT, "each response stripped as the release (`response[0].strip()`) before the answer-format "
                        "filter, the scoring and the output; kept iff it contains one of "
                        f"{', '.join(repr(m) for m in p.get('answer_markers') or [])}")]
    version = "3"  # 2: responses are stripped, as the release does; 3: prompt tokens per response
    Params = Params
    unit_in, unit_out = "question", "response"
    reads = ("id", "query", "generator")
    description = "Sampled responses per question that state a final answer; the rest in `dropped`."
    features = FEATURES
    dropped_features = with_drop_reason(FEATURES)
    origin = "question_id"
    reuse_ignores = ("answer_markers",)  # the filter reads the response: new markers never re-sample

    def model_specs(self) -> dict[str, Any]:
        return {"responder": self.params.model}

    def prompts(self) -> dict[str, str]:
        return {"responder": RESPONSE_PROMPT}

    def has_answer_format(self, response: str) -> bool:
        return any(marker in response for marker in self.params.answer_markers)

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        if not rows:
            return ShardResult([])
        k = self.params.samples
        sampling = Sampling(self.params.temperature, self.params.top_p, self.params.max_tokens, CHATML_STOP)
        ids = [(row, response_id(row["id"], j), j) for row in rows for j in range(k)]
        seeds = [derive_seed(self.config.seed, self.name, rid) for _, rid, _ in ids]
        engine = ctx.engine(self.models()["responder"])
        completions = generate_guarded(
            engine,
            [Request(response_prompt(row["query"]), sampling, s) for (row, _, _), s in zip(ids, seeds, strict=True)],
            ctx.per_row_progress(k))
        result = ShardResult([], [], **token_counts(completions))
        for (row, rid, j), seed, c in zip(ids, seeds, completions, strict=True):
            text = c.text.strip()  # the release: response[0].strip(), before the filter, scoring and output
            out = {"id": rid, "question_id": row["id"], "generator": row["generator"], "query": row["query"],
                   "response": text, "sample": j, "seed": seed, "finish_reason": c.finish_reason,
                   "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                   "difficulty": row.get("difficulty")}
            if c.error:
                result.dropped.append(rejected({**out, "has_answer_format": self.has_answer_format(text)}, c))
            else:
                self.filter(out, result)
        return result

    def filter(self, out: dict[str, Any], result: ShardResult) -> None:
        """The released answer-format filter: kept, or dropped as having no final answer."""
        out = {**out, "has_answer_format": self.has_answer_format(out["response"])}
        if out["has_answer_format"]:
            result.rows.append(out)
        else:
            result.dropped.append({**out, "drop_reason": "no-final-answer"})

    def rebuild(self, rows: list[dict[str, Any]], prior: list[tuple[str, dict[str, Any]]]) -> ShardResult:
        """The responses as the source recorded them; the answer-format filter applied again."""
        result = ShardResult([], [])
        result.prompt_tokens, result.tokens = self.prior_tokens([r for _, r in prior])
        for _, row in prior:
            if row.get("drop_reason") not in (None, "no-final-answer"):
                result.dropped.append(row)
                continue
            self.filter({k: v for k, v in row.items() if k not in ("drop_reason", "drop_detail")}, result)
        return result

    def prior_tokens(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        return token_sum(rows, "prompt_tokens", "completion_tokens")
