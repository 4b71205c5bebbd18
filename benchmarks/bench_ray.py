"""Rows/s of a preset with the Ray backend at 1 and 2 workers, against the local backend at the same worker count.

Each measurement is a fresh process that runs the stages into a new run directory, so every backend pays its
own worker start and engine loading; for Ray, starting the local cluster (`ray.init`) is timed apart, because a
user attaching to a running cluster does not pay it. Runs are interleaved (local 1, Ray 1, local 2, Ray 2, then
again) so that a slow minute on a shared machine does not land on one backend only; best of N is reported.

    python benchmarks/bench_ray.py --preset tiny --repeats 3
    python benchmarks/bench_ray.py --preset demo --stage questions --repeats 1 \\
        --set stages.questions.generators.0.count=128 --set rows_per_shard=32
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(spec: dict) -> dict:
    """One run, in this (fresh) process: seconds of `Runner.run`, rows read by its stages, Ray start apart."""
    from scalequest_dataset.config import resolve_config
    from scalequest_dataset.run import Runner
    from scalequest_dataset.run.backends import backend_class

    config = resolve_config(spec["preset"], spec["overrides"])
    stages = spec["stages"] or config.stage_names()
    cluster_seconds = None
    if spec["backend"] == "ray":
        import ray

        t = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
        cluster_seconds = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        with backend_class(spec["backend"])(workers=spec["workers"]) as backend:
            done = Runner(tmp, config, backend, show_progress=False, say=lambda _: None).run(stages)
        seconds = time.perf_counter() - t
    rows = sum(m.counts.rows_in for m in done.values() if m is not None)
    tokens = sum(m.tokens.completion for m in done.values() if m is not None)
    shard_seconds = sum(m.execution.cost.worker_seconds for m in done.values() if m is not None)
    return {"seconds": seconds, "rows": rows, "tokens": tokens, "shard_seconds": shard_seconds,
            "cluster_seconds": cluster_seconds}


def measure(spec: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         env=env)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-4000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--stage", action="append", help="only these stages (default: all)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--child")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    results: dict[tuple[str, int], list[dict]] = {}
    for _ in range(args.repeats):
        for workers in args.workers:
            for backend in ("local", "ray"):
                spec = {"preset": args.preset, "overrides": args.overrides, "stages": args.stage,
                        "backend": backend, "workers": workers}
                out = measure(spec)
                results.setdefault((backend, workers), []).append(out)
                print(f"{backend} x{workers}: {out}", file=sys.stderr)
    print("| workers | backend | rows | best run s | rows/s | all runs s | Ray cluster start s | Ray overhead |")
    print("|---:|---|---:|---:|---:|---|---:|---:|")
    for workers in args.workers:
        local = min(r["seconds"] for r in results[("local", workers)])
        for backend in ("local", "ray"):
            runs = results[(backend, workers)]
            best = min(r["seconds"] for r in runs)
            rows = runs[0]["rows"]
            start = ", ".join(f"{r['cluster_seconds']:.1f}" for r in runs) if backend == "ray" else "-"
            overhead = f"{100 * (best - local) / local:+.1f} %" if backend == "ray" else ""
            every = " / ".join(f"{r['seconds']:.1f}" for r in runs)
            print(f"| {workers} | {backend} | {rows} | {best:.1f} | {rows / best:.2f} | {every} | {start} | {overhead} |")


if __name__ == "__main__":
    main()
