"""Stage 5 of the paper: the solvability filter. The judge prompt, verbatim, as the user turn of the judge
model's own chat template (system "You are a helpful assistant." in the paper), greedy decoding.

Rules: `substring-yes` is the released code's (keep iff "yes" occurs anywhere in the lower-cased output,
which also keeps "...yesterday... No"); `final-verdict` reads the last standalone Yes/No word instead
(no verdict: not solvable)."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

import datasets
from pydantic import Field

from ..engines import Request, Sampling
from ..engines.base import generate_guarded
from ..recipe.ids import derive_seed
from ..recipe.params import ModelSpec, Strict
from ..recipe.prompts import QWEN_SYSTEM, SOLVABILITY_PROMPT, solvability_prompt
from .base import (
    DEPARTURE,
    EXACT,
    Note,
    ShardResult,
    Stage,
    StageContext,
    rejected,
    token_counts,
    token_sum,
    with_columns,
    with_drop_reason,
)
from .questions import QUESTION_FEATURES

_VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def substring_yes(output: str) -> bool:
    return "yes" in output.lower()


def final_verdict(output: str) -> bool:
    words = _VERDICT.findall(output)
    return bool(words) and words[-1].lower() == "yes"


RULES = {"substring-yes": substring_yes, "final-verdict": final_verdict}

class Params(Strict):
    """Stage 5: the judge prompt verbatim in the judge's chat template, greedy."""

    model: ModelSpec
    system_prompt: str | None = QWEN_SYSTEM
    rule: Literal["substring-yes", "final-verdict"] = "substring-yes"
    max_tokens: int = Field(2048, ge=1)


FEATURES = with_columns(
    QUESTION_FEATURES,
    judge_output=datasets.Value("string"),  # the judge's whole reply (its reasoning and verdict)
    judge_finish_reason=datasets.Value("string"),  # "length": the verdict may have been cut off
    solvable=datasets.Value("bool"),
    judge_prompt_tokens=datasets.Value("int32"),  # what the judge read and wrote for this row
    judge_completion_tokens=datasets.Value("int32"),
)


class SolvabilityStage(Stage):
    name = "solvability"
    statistics: ClassVar[dict[str, str]] = {"judge_finish_reason": "category"}  # the diff's statistics (diffing/stats.py)
    paper: ClassVar[dict[str, Any]] = {"model": "Qwen/Qwen2-Math-7B-Instruct",
                                       "system_prompt": "You are a helpful assistant.", "max_tokens": 2048}

    @classmethod
    def card_notes(cls, p: dict[str, Any]) -> list[Note]:
        rule = ((EXACT, "the released rule: solvable iff 'yes' occurs anywhere in the judge's lower-cased reply")
                if p.get("rule") == "substring-yes" else
                (DEPARTURE, "solvable iff the judge's last standalone Yes/No is Yes (the released rule: 'yes' "
                            "anywhere in the reply, which also passes '... yesterday ... No')"))
        departs = cls.departures(p)
        exact = [] if departs else [(EXACT, "the judge prompt verbatim in Qwen2-Math-7B-Instruct's chat template "
                                            "with the paper's system prompt, greedy, max 2048 tokens")]
        return [rule, *exact, *departs]
    version = "3"  # 3: the judge's tokens per row
    description = "Questions a judge model calls solvable math problems; the rest in `dropped`."
    Params = Params
    reads = ("id", "query")
    features = FEATURES
    dropped_features = with_drop_reason(FEATURES)
    reuse_ignores = ("rule",)  # the rule reads the judge's output: a new rule never re-runs the judge

    def model_specs(self) -> dict[str, Any]:
        return {"judge": self.params.model}

    def prompts(self) -> dict[str, str]:
        return {"system": self.params.system_prompt or "", "user": SOLVABILITY_PROMPT}

    def messages(self, query: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.params.system_prompt}] if self.params.system_prompt else []
        return [*system, {"role": "user", "content": solvability_prompt(query)}]

    def process(self, rows: list[dict[str, Any]], ctx: StageContext) -> ShardResult:
        if not rows:
            return ShardResult([])
        engine = ctx.engine(self.models()["judge"])
        sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=self.params.max_tokens)
        # Greedy decoding draws nothing; each row still gets its own derived seed (the determinism contract).
        requests = [Request(engine.chat_prompt(self.messages(r["query"])), sampling,
                            derive_seed(self.config.seed, self.name, r["id"])) for r in rows]
        completions = generate_guarded(engine, requests, ctx.progress)
        result = ShardResult([], [], **token_counts(completions))
        for row, c in zip(rows, completions, strict=True):
            out = {**row, "judge_output": c.text, "judge_finish_reason": c.finish_reason,
                   "judge_prompt_tokens": c.prompt_tokens, "judge_completion_tokens": c.completion_tokens}
            if c.error:
                result.dropped.append(rejected({**out, "solvable": self.rule(c.text)}, c))
            else:
                self.decide(out, result)
        return result

    def rule(self, output: str) -> bool:
        return RULES[self.params.rule](output)

    def decide(self, out: dict[str, Any], result: ShardResult) -> None:
        """The rule on the judge's output: kept, or dropped as unsolvable."""
        out = {**out, "solvable": self.rule(out["judge_output"])}
        if out["solvable"]:
            result.rows.append(out)
        else:
            result.dropped.append({**out, "drop_reason": "unsolvable"})

    def rebuild(self, rows: list[dict[str, Any]], prior: list[tuple[str, dict[str, Any]]]) -> ShardResult:
        """The judge's output as the source recorded it; the rule applied again (a refused row stays refused)."""
        result = ShardResult([], [])
        result.prompt_tokens, result.tokens = self.prior_tokens([r for _, r in prior])
        for _, row in prior:
            if row.get("drop_reason") not in (None, "unsolvable"):
                result.dropped.append(row)
                continue
            self.decide({k: v for k, v in row.items() if k not in ("drop_reason", "drop_detail")}, result)
        return result

    def prior_tokens(self, rows: list[dict[str, Any]]) -> tuple[int, int]:
        return token_sum(rows, "judge_prompt_tokens", "judge_completion_tokens")
