"""The one small interface every engine implements (lm-evaluation-harness style: one engine per file; "backend"
is what runs shards, run/backends/)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Request:
    """One row's generation: the full prompt text (templates already applied), its sampling, its seed."""

    prompt: str
    sampling: Sampling
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string), "length", or "error" (see `error`)
    # A request the engine refused or failed on, alone: the stage drops that row with this reason instead of
    # failing the shard. "prompt-too-long" (longer than the model's context) or "engine-error".
    error: str | None = None
    detail: str | None = None

    @classmethod
    def failed(cls, error: str, detail: str, prompt_tokens: int = 0) -> Completion:
        return cls("", prompt_tokens, 0, "error", error, detail)


ProgressFn = Callable[[int, int], None]  # (rows finished, tokens) since the last call: generated, or read by `score`
DoneFn = Callable[[int, "Completion"], None]  # (position in the call, its completion) as soon as it is final


@dataclass
class EngineInfo:
    """What can still move outputs, recorded in every manifest (README: Determinism). The same engine, model and
    machine always give the same info (no timings, no addresses): two shards' infos differ only where
    something that can move numerics differs."""

    engine: str
    version: str
    model: str
    dtype: str
    device: str  # "cpu" or "cuda"
    batch_invariant: bool  # a row's numbers never depend on its batch-mates or the batch size
    extra: dict[str, Any] = field(default_factory=dict)
    device_model: str = ""  # the GPU's name and compute capability, or the CPU's model name
    cpu_isa: str = ""  # instruction sets of the host CPU that its kernels may use (device.cpu_isa)
    torch_threads: int | None = None  # threads the engine computes with
    tensor_parallel_size: int = 1
    cuda_graphs: bool = False  # False: eager execution
    prefix_caching: bool = False
    max_model_len: int | None = None
    numerics: str = ""  # the engine's numerics construction and its version (e.g. TransformersEngine.NUMERICS)
    batch_size: int | None = None  # rows handed to the engine at once (vLLM: requests in flight together)

    def as_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "version": self.version, "model": self.model, "dtype": self.dtype,
                "device": self.device, "device_model": self.device_model, "cpu_isa": self.cpu_isa,
                "torch_threads": self.torch_threads, "batch_invariant": self.batch_invariant,
                "tensor_parallel_size": self.tensor_parallel_size, "cuda_graphs": self.cuda_graphs,
                "prefix_caching": self.prefix_caching, "max_model_len": self.max_model_len,
                "numerics": self.numerics, "batch_size": self.batch_size, **self.extra}


class Engine(Protocol):
    name: str

    def generate(self, requests: Sequence[Request], progress: ProgressFn | None = None, done: DoneFn | None = None
                 ) -> list[Completion]:
        """Complete every request; the i-th completion answers the i-th request. A row's output depends
        only on its prompt, sampling and seed, never on the other requests in the call. `done(i, completion)`, if
        given, is called once per request as soon as its completion is final (so work on it can start while the
        engine goes on: `generate_guarded`)."""
        ...

    def chat_prompt(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render messages with the model's own chat template."""
        ...

    def score(self, conversations: Sequence[list[dict[str, str]]], progress: ProgressFn | None = None
              ) -> list[float]:
        """Engines loaded with task="score" (a sequence-classification or reward model): one scalar per
        conversation, the model's raw output (no activation) at the last token. Like `generate`, a
        conversation's score never depends on the others in the call. `progress` gets the rows scored and the
        tokens they read (scoring generates none)."""
        ...

    def context_length(self) -> int:
        """The most tokens the loaded model takes (prompt and generation together)."""
        ...

    def prompt_length(self, prompt: str) -> int:
        """Tokens `generate` feeds the model for this prompt text."""
        ...

    def score_length(self, conversation: list[dict[str, str]]) -> int:
        """Tokens `score` feeds the model for this conversation."""
        ...

    def info(self) -> EngineInfo: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Score:
    """One conversation's score, or why the engine could not give one (see `Completion.error`)."""

    value: float | None
    error: str | None = None
    detail: str | None = None


def generate_guarded(engine: Engine, requests: Sequence[Request], progress: ProgressFn | None = None,
                     done: DoneFn | None = None) -> list[Completion]:
    """`engine.generate`, where one bad request fails alone: a prompt longer than the model's context comes back
    as a failed Completion, and if the engine raises, the requests it finished keep their results and the others are
    retried (`_isolating`) until the ones that fail alone come back failed. A row's output never depends on its
    batch-mates, so retrying moves no bytes. If every
    request fails alone, the failure is the engine's, not a row's: it is raised. `done(i, completion)` is called
    exactly once per request: as the engine finishes it, or (a failure, an engine that does not report) before
    this returns."""
    context = engine.context_length()
    out: list[Completion | None] = [None] * len(requests)
    reported: set[int] = set()

    def report(i: int, completion: Completion) -> None:
        if done is not None and i not in reported:
            reported.add(i)
            done(i, completion)

    todo: list[int] = []
    for i, request in enumerate(requests):
        n = engine.prompt_length(request.prompt)
        if n >= context:
            out[i] = Completion.failed("prompt-too-long", f"prompt has {n} tokens; the model's context is {context}", n)
            report(i, out[i])
        else:
            todo.append(i)

    def call(idx: list[int]) -> list[Completion]:
        batch = [requests[i] for i in idx]
        if done is None:
            return engine.generate(batch, progress)
        return engine.generate(batch, progress, done=lambda k, completion: report(idx[k], completion))

    for i, completion in zip(todo, _isolating(call, todo, lambda exc: Completion.failed("engine-error", _describe(exc))),
                             strict=True):
        out[i] = completion
        report(i, completion)
    return out  # type: ignore[return-value]


def score_guarded(engine: Engine, conversations: Sequence[list[dict[str, str]]],
                  progress: ProgressFn | None = None) -> list[Score]:
    """`engine.score` with the same per-row failure handling as `generate_guarded`."""
    context = engine.context_length()
    out: list[Score | None] = [None] * len(conversations)
    todo: list[int] = []
    for i, conversation in enumerate(conversations):
        n = engine.score_length(conversation)
        if n > context:
            out[i] = Score(None, "prompt-too-long", f"conversation has {n} tokens; the model's context is {context}")
        else:
            todo.append(i)

    def call(idx: list[int]) -> list[Score]:
        return [Score(v) for v in engine.score([conversations[i] for i in idx], progress)]

    for i, score in zip(todo, _isolating(call, todo, lambda exc: Score(None, "engine-error", _describe(exc))),
                        strict=True):
        out[i] = score
    return out  # type: ignore[return-value]


class IncompleteCall(Exception):
    """An engine call that failed part-way: `done` maps positions in the call to the results that were finished
    before `cause` was raised. The guards keep them and retry only the others."""

    def __init__(self, done: dict[int, Any], cause: Exception) -> None:
        super().__init__(str(cause))
        self.done, self.cause = done, cause


def _isolating(call: Callable[[list[int]], list[Any]], indices: list[int], failed: Callable[[Exception], Any]
               ) -> list[Any]:
    """`call(indices)`, where a request that fails alone comes back as `failed(exc)`. When a call raises, the
    results it finished (IncompleteCall.done) are kept and only the unfinished requests are retried, in halves, down
    to the one that fails alone: a finished result is never computed again, and one bad request among n costs
    about 2*log2(n) calls. If every request fails alone, the failure is the engine's: the first error is raised."""
    results: dict[int, Any] = {}
    alone: list[Exception] = []  # the errors of requests that failed alone
    first: list[Exception] = []

    def run(idx: list[int]) -> None:
        try:
            results.update(zip(idx, call(idx), strict=True))
            return
        except IncompleteCall as exc:
            results.update((idx[k], v) for k, v in exc.done.items())
            error = exc.cause
        except Exception as exc:
            error = exc
        first.append(error)
        rest = [i for i in idx if i not in results]
        if len(idx) == 1 and rest:
            results[idx[0]] = failed(error)
            alone.append(error)
        elif len(rest) == 1:
            run(rest)
        elif rest:
            run(rest[: len(rest) // 2])
            run(rest[len(rest) // 2 :])

    if not indices:
        return []
    run(indices)
    if len(alone) == len(indices):
        raise first[0]
    return [results[i] for i in indices]


def _describe(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:500]


def score_token_ids(tokenizer: Any, conversation: list[dict[str, str]], reward_token_id: int | None) -> list[int]:
    """The tokens a scorer reads: the whole conversation in its chat template (no generation prompt), encoded
    without added special tokens, then the model's reward token where it has one, exactly as InternLM2-Reward's
    `get_score` builds them: it appends `config.reward_token_id` only if the ids do not already end with it
    (the template on the Hub ends with `<|reward|>` itself; an older one did not), and reads the score at that
    last token. A model without a chat template (a base model with a regression head) reads the turns' contents
    joined by newlines, with its special tokens (BOS). Shared by every engine, so they all score the same ids."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
        ids = list(tokenizer.encode(text, add_special_tokens=False))
    else:
        ids = list(tokenizer.encode("\n".join(m["content"] for m in conversation), add_special_tokens=True))
    if reward_token_id is not None and (not ids or ids[-1] != reward_token_id):
        ids.append(reward_token_id)
    return ids
