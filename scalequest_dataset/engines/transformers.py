"""Plain transformers engine with its own sampling loop, so that every row draws from its own
`torch.Generator` seeded with the row's seed: a row's tokens do not depend on its batch-mates.

Rows are batched only with rows whose prompts have the same token length, so no row is ever padded:
the numbers a row sees are the same alone or in a batch (as far as the BLAS kernels are). Scoring
(task="score": a sequence-classification or reward model) pads instead, to whole blocks: see `score`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import ClassVar

from ..params import Strict
from .base import Completion, EngineInfo, ProgressFn, Request, score_token_ids

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
SCORE_PAD_MULTIPLE = 16


class TransformersOptions(Strict):
    """`engine.transformers` in a config: nothing to set (its numerics do not depend on knobs)."""

    FINGERPRINTED: ClassVar[tuple[str, ...]] = ()


class TransformersEngine:
    name = "transformers"
    Options = TransformersOptions

    def __init__(self, model: str, *, dtype: str = "auto", batch_size: int = 16, revision: str | None = None,
                 task: str = "generate", trust_remote_code: bool = False) -> None:
        import torch
        from transformers import AutoTokenizer

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = getattr(torch, _DTYPES[dtype]) if dtype in _DTYPES else torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
        self.model = _auto_class(model, revision, task, trust_remote_code).from_pretrained(
            model, revision=revision, dtype=torch_dtype, trust_remote_code=trust_remote_code)
        self.model.to(self.device).eval()
        self.model_name = model
        self.task = task
        self.batch_size = batch_size
        self.eos_ids: set[int] = set()
        if task == "score":
            return
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)

    def generate(self, requests: Sequence[Request], progress: ProgressFn | None = None) -> list[Completion]:
        encoded = [self.tokenizer(r.prompt, add_special_tokens=False)["input_ids"] for r in requests]
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, ids in enumerate(encoded):
            by_length[len(ids)].append(i)
        out: list[Completion | None] = [None] * len(requests)
        for length in sorted(by_length):
            rows = by_length[length]
            for start in range(0, len(rows), self.batch_size):
                idx = rows[start : start + self.batch_size]
                done = self._generate_batch([requests[i] for i in idx], [encoded[i] for i in idx])
                for i, completion in zip(idx, done, strict=True):
                    out[i] = completion
                if progress:
                    progress(len(idx), sum(c.completion_tokens for c in done))
        return out  # type: ignore[return-value]

    def _generate_batch(self, requests: Sequence[Request], prompts: list[list[int]]) -> list[Completion]:
        import torch

        n = len(requests)
        generators = [torch.Generator(device="cpu").manual_seed(r.seed) for r in requests]
        max_new = max(r.sampling.max_tokens for r in requests)
        input_ids = torch.tensor(prompts, dtype=torch.long, device=self.device)
        generated: list[list[int]] = [[] for _ in range(n)]
        texts: list[str | None] = [None] * n  # final text once a row stops
        reasons = ["length"] * n
        past = None
        with torch.inference_mode():
            for step in range(max_new):
                result = self.model(input_ids=input_ids, past_key_values=past, use_cache=True)
                past = result.past_key_values
                logits = result.logits[:, -1, :].float().cpu()
                next_ids = []
                for i, req in enumerate(requests):
                    if texts[i] is not None or step >= req.sampling.max_tokens:
                        next_ids.append(self.tokenizer.pad_token_id or 0)
                        continue
                    token = _sample(logits[i], req, generators[i])
                    next_ids.append(token)
                    if token in self.eos_ids:
                        texts[i], reasons[i] = self._decode(generated[i]), "stop"
                        generated[i].append(token)
                        continue
                    generated[i].append(token)
                    if req.sampling.stop:
                        text = self._decode(generated[i])
                        cut = _first_stop(text, req.sampling.stop)
                        if cut is not None:
                            texts[i], reasons[i] = text[:cut], "stop"
                if all(t is not None or len(g) >= r.sampling.max_tokens
                       for t, g, r in zip(texts, generated, requests, strict=True)):
                    break
                input_ids = torch.tensor(next_ids, dtype=torch.long, device=self.device).unsqueeze(1)
        return [
            Completion(texts[i] if texts[i] is not None else self._decode(generated[i]), len(prompts[i]),
                       len(generated[i]), reasons[i])
            for i in range(n)
        ]

    def score(self, conversations: Sequence[list[dict[str, str]]], progress: ProgressFn | None = None
              ) -> list[float]:
        """Scalar scores, batched by padded length. Unlike prompts in `generate`, scored rows are right-padded
        to a multiple of SCORE_PAD_MULTIPLE: measured on CPU, a matmul over a row count that is not a multiple
        of the kernel's block gave a row other numbers alone than in a batch; with every sequence a whole
        number of blocks, a row's score is the same alone or in any batch. Right padding with an attention
        mask leaves the real tokens' numbers untouched (causal attention), and the heads read the last real
        token (transformers' classifiers skip pad ids; InternLM2-Reward reads the mask)."""
        import torch

        if self.task != "score":
            raise RuntimeError(f"{self.model_name} was loaded for generation; load it with task='score' to score")
        config = self.model.config
        encoded = [score_token_ids(self.tokenizer, c, getattr(config, "reward_token_id", None)) for c in conversations]
        pad_id = getattr(config, "pad_token_id", None)
        multiple = SCORE_PAD_MULTIPLE if pad_id is not None else 1
        # Without a pad id, transformers' classifier heads refuse batches larger than one.
        batch_size = self.batch_size if pad_id is not None else 1
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, ids in enumerate(encoded):
            by_length[-(-len(ids) // multiple) * multiple].append(i)
        out: list[float] = [0.0] * len(encoded)
        with torch.inference_mode():
            for length in sorted(by_length):
                rows = by_length[length]
                for start in range(0, len(rows), batch_size):
                    idx = rows[start : start + batch_size]
                    ids = [encoded[i] + [pad_id] * (length - len(encoded[i])) for i in idx]
                    mask = [[1] * len(encoded[i]) + [0] * (length - len(encoded[i])) for i in idx]
                    logits = self.model(input_ids=torch.tensor(ids, dtype=torch.long, device=self.device),
                                        attention_mask=torch.tensor(mask, dtype=torch.long, device=self.device)
                                        ).logits.float().cpu()
                    for j, i in enumerate(idx):
                        out[i] = float(logits[j].reshape(-1)[0])
                    if progress:
                        progress(len(idx), 0)
        return out

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([t for t in ids if t not in self.eos_ids], skip_special_tokens=False)

    def chat_prompt(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def context_length(self) -> int:
        return int(self.model.config.max_position_embeddings)

    def prompt_length(self, prompt: str) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=False)["input_ids"])

    def score_length(self, conversation: list[dict[str, str]]) -> int:
        return len(score_token_ids(self.tokenizer, conversation, getattr(self.model.config, "reward_token_id", None)))

    def info(self) -> EngineInfo:
        import torch
        import transformers

        device = torch.cuda.get_device_name(0) if self.device == "cuda" else "cpu"
        return EngineInfo("transformers", transformers.__version__, self.model_name,
                          str(self.model.dtype).removeprefix("torch."), device, batch_invariant=False,
                          extra={"torch": torch.__version__, "task": self.task})

    def close(self) -> None:
        del self.model


def _auto_class(model: str, revision: str | None, task: str, trust_remote_code: bool):
    """The transformers auto class for a task. Reward models shipped as remote code (InternLM2-Reward)
    register only `AutoModel`, whose class returns the reward as its logits."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

    if task == "generate":
        return AutoModelForCausalLM
    config = AutoConfig.from_pretrained(model, revision=revision, trust_remote_code=trust_remote_code)
    auto_map = getattr(config, "auto_map", None) or {}
    if "AutoModel" in auto_map and "AutoModelForSequenceClassification" not in auto_map:
        return AutoModel
    return AutoModelForSequenceClassification


def _sample(logits, req: Request, generator) -> int:
    import torch

    if req.sampling.greedy:
        return int(torch.argmax(logits))  # ties go to the lowest token id
    probs = torch.softmax(logits.double() / req.sampling.temperature, dim=-1)
    if req.sampling.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True, stable=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        keep = (cumulative - sorted_probs) < req.sampling.top_p  # keep the token that crosses top_p
        sorted_probs = sorted_probs * keep
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    cuts = [text.find(s) for s in stops]
    found = [c for c in cuts if c >= 0]
    return min(found) if found else None
