"""Stage 3 of the paper: questions generated from scratch by a QGen model given only the pre-query
template (T=1.0, top_p=0.99, max_tokens 1024 as in the released code; n=1 per request; output stripped)."""

from __future__ import annotations

from typing import Any

import datasets

from ..engines import Request, Sampling
from ..ids import derive_seed, question_id
from ..prompts import pre_query_template
from .base import ShardResult, Stage, StageContext


class QuestionsStage(Stage):
    name = "questions"
    version = "1"
    input = None
    description = "Raw questions sampled from each generator's bare pre-query template."
    features = datasets.Features({
        "id": datasets.Value("string"),
        "generator": datasets.Value("string"),
        "index": datasets.Value("int64"),
        "query": datasets.Value("string"),
        "seed": datasets.Value("int64"),
        "finish_reason": datasets.Value("string"),
        "prompt_tokens": datasets.Value("int32"),
        "completion_tokens": datasets.Value("int32"),
    })

    def model_specs(self) -> dict[str, Any]:
        return {f"generator:{g.name}": g.model for g in self.params.generators}

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
        model = self.resolved_models()[f"generator:{gen.name}"]
        completions = ctx.engine(model).generate(
            [Request(template.prefix, sampling, s) for s in seeds], ctx.progress)
        out = [
            {"id": r["id"], "generator": r["generator"], "index": r["index"], "query": c.text.strip(), "seed": s,
             "finish_reason": c.finish_reason, "prompt_tokens": c.prompt_tokens,
             "completion_tokens": c.completion_tokens}
            for r, s, c in zip(rows, seeds, completions, strict=True)
        ]
        return ShardResult(out, tokens=sum(c.completion_tokens for c in completions))
