"""Stage 3 of the paper: questions generated from scratch by a QGen model given only the pre-query
template (T=1.0, top_p=0.99, max_tokens 1024 as in the released code; n=1 per request; output stripped)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import datasets
from pydantic import Field, field_validator, model_validator

from ..engines import Request, Sampling
from ..engines.base import generate_guarded
from ..recipe.ids import derive_seed, question_id, validate_generator_name
from ..recipe.params import ModelSpec, Strict
from ..recipe.prompts import pre_query_template
from .base import (
    DEPARTURE,
    EXACT,
    GENERATORS_FIGURE,
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


class GeneratorParams(Strict):
    name: str
    model: ModelSpec
    template: Literal["qwen", "deepseek"]
    system_prompt: str | None = None
    count: int = Field(ge=0)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_generator_name(value)

    @model_validator(mode="after")
    def _system_only_for_qwen(self) -> GeneratorParams:
        if self.template == "deepseek" and self.system_prompt is not None:
            raise ValueError("system_prompt is only allowed with template 'qwen'")
        return self


class Params(Strict):
    """Stage 3 of the paper: questions from the bare pre-query template."""

    generators: list[GeneratorParams] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(0.99, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1)

    @field_validator("generators")
    @classmethod
    def _unique_names(cls, gens: list[GeneratorParams]) -> list[GeneratorParams]:
        names = [g.name for g in gens]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"generator names must be unique, repeated: {dupes}")
        return gens


# The columns every later question-level stage starts from.
QUESTION_FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "generator": datasets.Value("string"),
    "index": datasets.Value("int64"),
    "query": datasets.Value("string"),
    "seed": datasets.Value("int64"),
    "finish_reason": datasets.Value("string"),
    "prompt_tokens": datasets.Value("int32"),
    "completion_tokens": datasets.Value("int32"),
})


class QuestionsStage(Stage):
    name = "questions"
    statistics: ClassVar[dict[str, str]] = {"generator": "category", "finish_reason": "category"}  # the diff's statistics (diffing/stats.py)
    paper: ClassVar[dict[str, Any]] = {"temperature": 1.0, "top_p": 0.99}
    figures = (length_figure("query"), GENERATORS_FIGURE)
    QGEN_MODELS: ClassVar[set[str]] = {"dyyyyyyyy/ScaleQuest-DeepSeekMath-7B-QGen", "dyyyyyyyy/ScaleQuest-Qwen2-Math-7B-QGen"}

    @classmethod
    def card_notes(cls, p: dict[str, Any]) -> list[Note]:
        notes: list[Note] = [(EXACT, "the pre-query templates and their stop strings verbatim, one sample per "
                                     "request, each question stripped, as the release")]
        m = p.get("max_tokens")
        if m == 1024:
            notes.append((DEPARTURE, "max_tokens 1024, the released code's value; the paper's text says 512: we "
                                     "follow the code that made the released data"))
        elif m == 512:
            notes.append((EXACT, "max_tokens 512 as the paper's text (the released code uses 1024)"))
        else:
            notes.append((DEPARTURE, f"max_tokens {m} (the paper: 512; the released code: 1024)"))
        gens = p.get("generators") or []
        models = sorted({g["model"]["id"] for g in gens})
        if set(models) <= cls.QGEN_MODELS:
            notes.append((EXACT, "the released QGen models"))
        else:
            notes.append((DEPARTURE, f"generators {', '.join(models)} in place of the paper's QGen models"))
        prompted = [g["name"] for g in gens if g.get("system_prompt")]
        if prompted:
            notes.append((DEPARTURE, f"a system prompt in the pre-query template of {', '.join(prompted)} (the "
                                     "paper's templates have none)"))
        counts = sorted({g["count"] for g in gens})
        if counts != [1_000_000]:
            notes.append((DEPARTURE, f"{' / '.join(f'{c:,}' for c in counts)} questions per generator (the paper: "
                                     "1M)"))
        return notes + cls.departures(p)
    version = "2"
    description = "Raw questions sampled from each generator's bare pre-query template."
    Params = Params
    unit_in, unit_out = "request", "question"
    optional = False
    features = QUESTION_FEATURES
    dropped_features = with_drop_reason(QUESTION_FEATURES)  # requests the engine refused
    reuse_ignores = ("generators.*.count",)  # a question never depends on how many follow it

    def prior_tokens(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        return token_sum(rows, "prompt_tokens", "completion_tokens")

    def model_specs(self) -> dict[str, Any]:
        return {f"generator:{g.name}": g.model for g in self.params.generators}

    def model_field(self, role: str) -> str:
        return f"stages.questions.generators.{role.removeprefix('generator:')}.model"

    def prompts(self) -> dict[str, str]:
        return {g.name: pre_query_template(g.template, g.system_prompt).prefix for g in self.params.generators}

    def source_plan(self) -> list[dict[str, Any]]:
        """Shards per generator (a shard never mixes two models), each a fixed range of indices."""
        size = self.config.rows_per_shard
        return [{"generator": g.name, "start": a, "stop": min(a + size, g.count), "rows": min(a + size, g.count) - a}
                for g in self.params.generators for a in range(0, g.count, size)]

    def source_rows(self, descriptor: dict[str, Any]) -> list[dict[str, Any]]:
        gen = descriptor["generator"]
        return [{"id": question_id(gen, i), "generator": gen, "index": i}
                for i in range(descriptor["start"], descriptor["stop"])]

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        if not rows:
            return ShardResult([])
        gens = {g.name: g for g in self.params.generators}
        gen = gens[rows[0]["generator"]]
        template = pre_query_template(gen.template, gen.system_prompt)
        sampling = Sampling(self.params.temperature, self.params.top_p, self.params.max_tokens, template.stop)
        seeds = [derive_seed(self.config.seed, self.name, r["id"]) for r in rows]
        engine = ctx.engine(self.models()[f"generator:{gen.name}"])
        completions = generate_guarded(engine, [Request(template.prefix, sampling, s) for s in seeds], ctx.progress)
        kept, dropped = [], []
        for r, s, c in zip(rows, seeds, completions, strict=True):
            out = {"id": r["id"], "generator": r["generator"], "index": r["index"], "query": c.text.strip(),
                   "seed": s, "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
                   "completion_tokens": c.completion_tokens}
            if c.error:
                dropped.append(rejected(out, c))
            else:
                kept.append(out)
        return ShardResult(kept, dropped, **token_counts(completions))
