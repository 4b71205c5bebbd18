"""Rows/s of a preset with the Ray backend at 1 and 2 workers, against the local backend at the same worker count.

Each measurement is a fresh process that runs the stages into a new run directory, so every backend pays its
own worker start and engine loading; for Ray, starting the local cluster (`ray.init`) is timed apart, because a
user attaching to a running cluster does not pay it. Runs are interleaved (local 1, Ray 1, local 2, Ray 2, then
again) so that a slow minute on a shared machine does not land on one backend only; best of N is reported.

Besides wall time, each run's CPU-seconds are counted over the whole process tree it made (the driver, local
worker processes, and for Ray its cluster's processes and actors: /proc utime+stime, with reaped children), from
just before `Runner.run` to just after it. On a machine shared with other jobs, wall time moves with their load;
CPU-seconds mostly do not, and they include everything Ray itself costs (its daemons, actor start-up, IPC).

    python benchmarks/bench_ray.py --preset tiny --repeats 3
    python benchmarks/bench_ray.py --preset demo --stage questions --repeats 1 \\
        --set stages.questions.generators.0.count=128 --set rows_per_shard=32
    python benchmarks/bench_ray.py --preset tiny --prepare questions --stage language --set rows_per_shard=1

The last one times the per-shard cost of each backend alone: 40 one-row shards of a stage that loads no model
(`--prepare` stages run first, in-process, untimed).
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
    from scalequest_dataset.recipe.config import resolve_config
    from scalequest_dataset.run import Runner
    from scalequest_dataset.run.backends import backend_class

    config = resolve_config(spec["preset"], spec["overrides"])
    stages = spec["stages"] or config.stage_names()
    cluster_seconds = None
    if spec["backend"] == "ray":
        import ray  # started before the prepared stages: its start-up must not overlap the timed part

        t = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
        cluster_seconds = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        if spec.get("prepare"):
            with backend_class("local")() as local:
                Runner(tmp, config, local, show_progress=False, say=lambda _: None).run(spec["prepare"])
        cpu = tree_cpu_seconds(os.getpid())
        t = time.perf_counter()
        with backend_class(spec["backend"])(workers=spec["workers"]) as backend:
            done = Runner(tmp, config, backend, show_progress=False, say=lambda _: None).run(stages)
            seconds = time.perf_counter() - t
            cpu = tree_cpu_seconds(os.getpid()) - cpu  # before the workers stop
    rows = sum(m.counts.rows_in for m in done.values() if m is not None)
    tokens = sum(m.tokens.completion for m in done.values() if m is not None)
    shard_seconds = sum(m.execution.cost.worker_seconds for m in done.values() if m is not None)
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": rows, "tokens": tokens, "shard_seconds": shard_seconds,
            "cluster_seconds": cluster_seconds}


def tree_cpu_seconds(root: int) -> float:
    """CPU-seconds of `root` and every live descendant, each with its reaped children (cutime, cstime)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents, used = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text[text.rindex(")") + 2:].split()
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = sum(int(x) for x in fields[11:15]) / ticks
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(used.get(pid, 0.0) for pid in tree)


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
    ap.add_argument("--prepare", action="append", default=[], help="run these stages first, in-process, untimed")
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
                        "prepare": args.prepare, "backend": backend, "workers": workers}
                out = measure(spec)
                results.setdefault((backend, workers), []).append(out)
                print(f"{backend} x{workers}: {out}", file=sys.stderr)
    print("| workers | backend | rows | best wall s | rows/s | all runs: wall s | CPU s (best) | all runs: CPU s | "
          "Ray overhead, wall | Ray overhead, CPU | Ray cluster start s |")
    print("|---:|---|---:|---:|---:|---|---:|---|---:|---:|---:|")
    for workers in args.workers:
        local = results[("local", workers)]
        for backend in ("local", "ray"):
            runs = results[(backend, workers)]
            wall, cpu = min(r["seconds"] for r in runs), min(r["cpu_seconds"] for r in runs)
            rows = runs[0]["rows"]
            walls = " / ".join(f"{r['seconds']:.1f}" for r in runs)
            cpus = " / ".join(f"{r['cpu_seconds']:.1f}" for r in runs)
            over_wall = over_cpu = start = ""
            if backend == "ray":
                over_wall = percent(wall, min(r["seconds"] for r in local))
                over_cpu = percent(cpu, min(r["cpu_seconds"] for r in local))
                start = " / ".join(f"{r['cluster_seconds']:.1f}" for r in runs)
            print(f"| {workers} | {backend} | {rows} | {wall:.1f} | {rows / wall:.2f} | {walls} | {cpu:.1f} | {cpus} | "
                  f"{over_wall} | {over_cpu} | {start} |")


def percent(value: float, base: float) -> str:
    return f"{100 * (value - base) / base:+.1f} %"


if __name__ == "__main__":
    main()
