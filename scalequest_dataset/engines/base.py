"""The one small interface every backend implements (lm-evaluation-harness style: one backend per file)."""

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
    finish_reason: str  # "stop" (EOS or a stop string) or "length"


ProgressFn = Callable[[int, int], None]  # (rows finished, completion tokens) since the last call


@dataclass
class EngineInfo:
    """What can still move outputs, recorded in every manifest (DESIGN.md 2.6). The same engine, model and
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

    def as_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "version": self.version, "model": self.model, "dtype": self.dtype,
                "device": self.device, "device_model": self.device_model, "cpu_isa": self.cpu_isa,
                "torch_threads": self.torch_threads, "batch_invariant": self.batch_invariant,
                "tensor_parallel_size": self.tensor_parallel_size, "cuda_graphs": self.cuda_graphs,
                "prefix_caching": self.prefix_caching, "max_model_len": self.max_model_len,
                "numerics": self.numerics, **self.extra}


class Engine(Protocol):
    name: str

    def generate(self, requests: Sequence[Request], progress: ProgressFn | None = None) -> list[Completion]:
        """Complete every request; the i-th completion answers the i-th request. A row's output depends
        only on its prompt, sampling and seed, never on the other requests in the call."""
        ...

    def chat_prompt(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render messages with the model's own chat template."""
        ...

    def score(self, conversations: Sequence[list[dict[str, str]]], progress: ProgressFn | None = None
              ) -> list[float]:
        """Engines loaded with task="score" (a sequence-classification or reward model): one scalar per
        conversation, the model's raw output (no activation) at the last token. Like `generate`, a
        conversation's score never depends on the others in the call."""
        ...

    def info(self) -> EngineInfo: ...

    def close(self) -> None: ...


def score_token_ids(tokenizer: Any, conversation: list[dict[str, str]], reward_token_id: int | None) -> list[int]:
    """The tokens a scorer reads: the whole conversation in its chat template (no generation prompt), plus
    the model's reward token where it has one (InternLM2-Reward's `get_score` appends
    `config.reward_token_id` and reads the score there). A model without a chat template (a base model with
    a regression head) reads the turns' contents joined by newlines, with its special tokens (BOS).
    Shared by every engine, so they all score the same ids."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
        ids = list(tokenizer.encode(text, add_special_tokens=False))
    else:
        ids = list(tokenizer.encode("\n".join(m["content"] for m in conversation), add_special_tokens=True))
    return [*ids, reward_token_id] if reward_token_id is not None else ids
