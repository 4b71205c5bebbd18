"""Question generation through the pipeline vs a bare loop calling the same engine on the same prompts.

Both share one loaded engine, in the same process, on the same requests (same seeds): the difference is
the pipeline's own cost (planning, seeding, Parquet writes, sha256, completion records, progress).

    python benchmarks/bench_pipeline_overhead.py --preset demo --count 128 --engine vllm
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from scalequest_dataset.executor import Run

from scalequest_dataset.config import resolve_config
from scalequest_dataset.engines import EnginePool, Request, Sampling
from scalequest_dataset.ids import derive_seed
from scalequest_dataset.models import resolve_model
from scalequest_dataset.prompts import pre_query_template


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--count", type=int, default=128)
    ap.add_argument("--engine", default=None)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    overrides = [f"stages.questions.generators.0.count={args.count}"]
    config = resolve_config(args.preset, overrides, args.engine)
    config = config.model_copy(update={"stages": config.stages.model_copy(
        update={"questions": config.stages.questions.model_copy(
            update={"generators": config.stages.questions.generators[:1]})})})
    q = config.stages.questions
    gen = q.generators[0]
    model = resolve_model(gen.model)
    pool = EnginePool()
    engine = pool.get(config.engine.name, model.path, dtype=config.engine.dtype, batch_size=config.engine.batch_size,
                      revision=model.spec.revision)
    template = pre_query_template(gen.template, gen.system_prompt)
    sampling = Sampling(q.temperature, q.top_p, q.max_tokens, template.stop)
    ids = [f"{gen.name}-{i:08d}" for i in range(gen.count)]
    engine.generate([Request(template.prefix, sampling, 1)])  # warm-up

    results = {"bare": [], "pipeline": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        tokens = 0
        for start in range(0, len(ids), config.rows_per_shard):  # the same per-shard calls as the pipeline
            chunk = ids[start : start + config.rows_per_shard]
            reqs = [Request(template.prefix, sampling, derive_seed(config.seed, "questions", i)) for i in chunk]
            tokens += sum(c.completion_tokens for c in engine.generate(reqs))
        results["bare"].append((time.perf_counter() - t, tokens))

        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            run = Run(Path(tmp), config, pool=pool, show_progress=False)
            run.run(["questions"])
            elapsed = time.perf_counter() - t
            tokens = json.loads((Path(tmp) / "manifests" / "questions.json").read_text())["cost"]["tokens"]
            results["pipeline"].append((elapsed, tokens))

    bare = min(s for s, _ in results["bare"])
    pipe = min(s for s, _ in results["pipeline"])
    tok = results["bare"][0][1]
    assert tok == results["pipeline"][0][1], "pipeline and bare loop must generate the same tokens"
    print(json.dumps({
        "engine": engine.info().as_dict(), "rows": gen.count, "tokens": tok,
        "bare_seconds": round(bare, 2), "pipeline_seconds": round(pipe, 2),
        "bare_tok_per_s": round(tok / bare, 1), "pipeline_tok_per_s": round(tok / pipe, 1),
        "overhead_percent": round(100 * (pipe - bare) / bare, 2),
        "all_seconds": {k: [round(s, 2) for s, _ in v] for k, v in results.items()},
    }, indent=2))
    pool.close()


if __name__ == "__main__":
    main()
