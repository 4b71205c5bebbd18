"""Helpers for stage tests: a fake engine whose replies are a pure function of the request (prompt,
sampling, seed), configs with one stage section, and rows as the earlier stages write them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from scalequest_dataset.engines import Completion, EngineInfo, Request
from scalequest_dataset.recipe.config import build_config
from scalequest_dataset.recipe.model_identity import ResolvedModel
from scalequest_dataset.stages import STAGES, StageContext


class FakeEngine:
    name = "fake"

    def __init__(self, reply: Callable[[Request], str] | None = None,
                 score: Callable[[list[dict[str, str]]], float] | None = None) -> None:
        self.reply = reply or (lambda request: "")
        self.scorer = score or (lambda conversation: 0.0)
        self.requests: list[Request] = []
        self.scored: list[list[dict[str, str]]] = []
        self.batch_size = 8

    def generate(self, requests: Sequence[Request], progress=None, done=None) -> list[Completion]:
        self.requests.extend(requests)
        out = []
        for i, r in enumerate(requests):
            text = self.reply(r)
            out.append(Completion(text, len(r.prompt), len(text.split()), "stop"))
            if done:
                done(i, out[-1])
        if progress:
            progress(len(requests), sum(c.completion_tokens for c in out))
        return out

    def chat_prompt(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def score(self, conversations: Sequence[list[dict[str, str]]], progress=None) -> list[float]:
        self.scored.extend(conversations)
        return [self.scorer(c) for c in conversations]

    def context_length(self) -> int:
        return 1 << 20

    def prompt_length(self, prompt: str) -> int:
        return len(prompt)

    def score_length(self, conversation: list[dict[str, str]]) -> int:
        return sum(len(m["content"]) for m in conversation)

    def info(self) -> EngineInfo:
        return EngineInfo("fake", "0", "fake", "float32", "cpu", batch_invariant=True)

    def close(self) -> None:
        pass


BASE = {
    "seed": 7,
    "stages": {"questions": {"generators": [
        {"name": "qwen2-math-qgen", "model": "org/qwen-qgen", "template": "qwen", "count": 4},
        {"name": "deepseek-qgen", "model": "org/deepseek-qgen", "template": "deepseek", "count": 4},
    ]}},
}


def make_stage(name: str, section: dict[str, Any] | None = None, seed: int = 7):
    """The stage `name` of a config whose other sections are the minimum. Its hub-style model ids are pinned to
    a made-up commit, as a plan would pin them, and never loaded (the fake engine stands in)."""
    stages = dict(BASE["stages"])
    if section is not None or name not in stages:
        stages[name] = section or {}
    for upstream in ("questions", "language", "dedup", "solvability", "difficulty", "responses", "reward"):
        if upstream == name:
            break
        stages.setdefault(upstream, UPSTREAM.get(upstream, {}))
    config = build_config({**BASE, "seed": seed, "stages": stages})
    stage = STAGES[name](config)
    pinned = {role: ResolvedModel(spec.id, "0" * 40, spec.id) for role, spec in stage.model_specs().items()}
    return STAGES[name](config, pinned)


# The minimal sections of the stages before the one under test (a config enables a stage's input chain).
UPSTREAM: dict[str, dict[str, Any]] = {
    "solvability": {"model": "org/judge"},
    "difficulty": {"method": "self-consistency", "model": "org/sampler", "samples": 2},
    "responses": {"model": "org/responder", "samples": 2},
    "reward": {"method": "self-consistency"},
}


class Calls:
    """The engine getter a StageContext gets: records the overrides (task, trust_remote_code, dtype)."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.overrides: list[dict[str, Any]] = []

    def __call__(self, model, **overrides) -> FakeEngine:
        self.overrides.append(overrides)
        return self.engine


def make_ctx(stage, engine: FakeEngine | None = None) -> tuple[StageContext, Calls]:
    calls = Calls(engine or FakeEngine())
    return StageContext(stage.config, calls), calls


def question(qid: str, query: str, **extra: Any) -> dict[str, Any]:
    """A row as the questions stage writes it."""
    generator, _, index = qid.rpartition("-")
    return {"id": qid, "generator": generator, "index": int(index), "query": query, "seed": 1,
            "finish_reason": "stop", "prompt_tokens": 10, "completion_tokens": 20, **extra}
