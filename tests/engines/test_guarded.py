"""A failed request is retried alone without redoing the others (engines/base.py `_isolating`)."""

from __future__ import annotations

from collections import Counter

import pytest

from scalequest_dataset.engines import Completion, Request, Sampling
from scalequest_dataset.engines.base import IncompleteCall, generate_guarded


class InOrderEngine:
    """Computes its requests one after the other, as a step loop finishes them; the request whose prompt is `bad`
    raises, and the call reports what it finished before (IncompleteCall), as VLLMEngine.generate does. Counts
    every request it computes and every call."""

    def __init__(self, bad: set[str], partial: bool = True) -> None:
        self.bad, self.partial = bad, partial
        self.computed: Counter[str] = Counter()
        self.calls: list[int] = []

    def context_length(self) -> int:
        return 100

    def prompt_length(self, prompt: str) -> int:
        return 1

    def generate(self, requests, progress=None, done=None):
        self.calls.append(len(requests))
        finished: dict[int, Completion] = {}
        for k, r in enumerate(requests):
            if r.prompt in self.bad:
                error = RuntimeError(f"step failed on {r.prompt}")
                raise IncompleteCall(finished, error) if self.partial else error
            self.computed[r.prompt] += 1
            finished[k] = Completion(r.prompt.upper(), 1, 1, "stop")
            if done and self.partial:  # an engine that reports as it goes (vLLM's step loop)
                done(k, finished[k])
        return [finished[k] for k in range(len(requests))]


def prompts(n: int) -> list[Request]:
    return [Request(f"p{i}", Sampling(), i) for i in range(n)]


@pytest.mark.parametrize("bad", [{"p0"}, {"p37"}, {"p63"}, {"p5", "p40"}])
def test_finished_requests_are_never_computed_again(bad):
    engine = InOrderEngine(bad)
    out = generate_guarded(engine, prompts(64))
    assert [c.text for c in out] == ["" if f"p{i}" in bad else f"P{i}" for i in range(64)]  # in request order
    assert [i for i, c in enumerate(out) if c.error == "engine-error"] == sorted(int(b[1:]) for b in bad)
    assert all("step failed on" in c.detail for c in out if c.error)
    assert set(engine.computed.values()) == {1} and len(engine.computed) == 64 - len(bad)  # each exactly once
    assert len(engine.calls) <= 1 + 2 * len(bad) * 6  # halving: about 2*log2(64) calls per bad request, not 64


def test_without_partial_results_a_request_is_redone_about_log2_n_times():
    engine = InOrderEngine({"p37"}, partial=False)
    out = generate_guarded(engine, prompts(64))
    assert [c.error for c in out].count("engine-error") == 1 and out[36].text == "P36" and out[38].text == "P38"
    assert max(engine.computed.values()) <= 7 and len(engine.calls) <= 13  # not every request alone (64 calls)


def test_an_engine_that_fails_every_request_still_fails():
    engine = InOrderEngine({f"p{i}" for i in range(4)})
    with pytest.raises(RuntimeError, match="step failed on p0"):
        generate_guarded(engine, prompts(4))


@pytest.mark.parametrize("partial", [True, False])
@pytest.mark.parametrize("bad", [set(), {"p0"}, {"p37"}, {"p5", "p40"}])
def test_done_is_called_exactly_once_per_request_whatever_fails_and_is_retried(bad, partial):
    """Reported as the engine finishes (kept across a retry, never twice), or by the guard at the end: a request
    that failed alone, one the engine did not report, a prompt too long for the context."""
    engine = InOrderEngine(bad, partial=partial)
    requests = [*prompts(64), Request("x" * 200, Sampling(), 99)]
    engine.prompt_length = lambda prompt: 100 if prompt.startswith("x") else 1  # the last one: too long
    seen: list[tuple[int, str]] = []
    out = generate_guarded(engine, requests, done=lambda i, c: seen.append((i, c.text if not c.error else c.error)))
    assert sorted(i for i, _ in seen) == list(range(65))  # each exactly once
    assert dict(seen) == {i: (c.text if not c.error else c.error) for i, c in enumerate(out)}  # what was returned
    assert dict(seen)[64] == "prompt-too-long"
