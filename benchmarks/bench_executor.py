"""The executor's own cost (issue 9): rows/s of a preset with the local backend at 1 vs 2 workers, and the time
per shard spent outside engine calls (planning, reading and verifying input, writing Parquet, hashing, records)
as a share of engine time.

    python benchmarks/bench_executor.py overhead --preset demo --stage questions --set stages.questions.generators.0.count=128
    python benchmarks/bench_executor.py workers --preset tiny
    python benchmarks/bench_executor.py workers --preset demo --stage questions --set stages.questions.generators.0.count=64

`overhead` runs in this process with every engine call timed; `workers` runs the CLI (`--workers 1` and `2`)
in fresh run directories and reads the stages' costs from the manifests."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def overhead(preset: str, stages: list[str] | None, overrides: list[str]) -> dict:
    from scalequest_dataset.engines import EnginePool
    from scalequest_dataset.recipe.config import resolve_config
    from scalequest_dataset.run import Runner, records
    from scalequest_dataset.run import plan as plan_module
    from scalequest_dataset.run import runner as runner_module
    from scalequest_dataset.run.backends.local import LocalBackend
    from scalequest_dataset.run.records import ShardRecord

    engine_seconds: dict[str, float] = defaultdict(float)
    load_seconds: dict[str, float] = defaultdict(float)
    plan_seconds: dict[str, float] = defaultdict(float)
    current = {"stage": ""}

    class TimedPool(EnginePool):
        """Every generate/score call of every engine, timed and charged to the stage being run."""

        def get(self, *args, **kwargs):
            started = time.perf_counter()
            engine = super().get(*args, **kwargs)
            load_seconds[current["stage"]] += time.perf_counter() - started  # loading a model, once per worker
            for method in ("generate", "score"):
                real = getattr(type(engine), method)

                def timed(*a, _real=real, _engine=engine, **k):
                    started = time.perf_counter()
                    try:
                        return _real(_engine, *a, **k)
                    finally:
                        engine_seconds[current["stage"]] += time.perf_counter() - started

                setattr(engine, method, timed)
            return engine

    real_plan = plan_module.plan_stage

    def timed_plan(layout, config, name, *a, **k):
        current["stage"] = name
        started = time.perf_counter()
        try:
            return real_plan(layout, config, name, *a, **k)
        finally:
            plan_seconds[name] += time.perf_counter() - started

    runner_module.plan_stage = timed_plan
    config = resolve_config(preset, overrides)
    pool = TimedPool()
    with tempfile.TemporaryDirectory() as tmp, LocalBackend(pool=pool) as backend:
        Runner(tmp, config, backend, show_progress=False).run(stages)
        out = {}
        for name in stages or config.stage_names():
            recs = [records.read(ShardRecord, p) for p in sorted(Path(tmp, "state", name).glob("shard-*.json"))]
            shard_s = sum(r.execution.seconds for r in recs)
            engine_s = engine_seconds[name]
            other = shard_s - engine_s - load_seconds[name]
            out[name] = {"shards": len(recs), "rows_in": sum(r.rows_in for r in recs),
                         "plan_seconds": round(plan_seconds[name], 3), "shard_seconds": round(shard_s, 3),
                         "engine_seconds": round(engine_s, 3), "engine_load_seconds": round(load_seconds[name], 3),
                         "outside_engine_seconds": round(other, 3),
                         "outside_share_of_engine_percent": round(100 * other / engine_s, 3) if engine_s else None,
                         "with_planning_percent": round(100 * (other + plan_seconds[name]) / engine_s, 3)
                         if engine_s else None}
    pool.close()
    return out


def workers(preset: str, stages: list[str] | None, overrides: list[str], counts: list[int]) -> dict:
    from scalequest_dataset.run import RunLayout, records
    from scalequest_dataset.run.records import Manifest

    out = {}
    for n in counts:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "scalequest_dataset.cli", "run", "--preset", preset, "--out", tmp,
                   "--workers", str(n), "--no-progress", *[a for s in stages or [] for a in ("--stage", s)],
                   *[a for o in overrides for a in ("--set", o)]]
            started = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
            wall = time.perf_counter() - started
            layout = RunLayout(tmp)
            per_stage = {}
            for path in sorted(Path(tmp, "manifests").glob("*.json")):
                m = records.read(Manifest, path)
                cost = m.execution.cost
                per_stage[m.stage] = {"rows_in": m.counts.rows_in, "wall_seconds": cost.wall_seconds,
                                      "worker_seconds": cost.worker_seconds,
                                      "rows_per_s": round(m.counts.rows_in / cost.wall_seconds, 2)
                                      if cost.wall_seconds else None}
            rows = sum(s["rows_in"] for s in per_stage.values())
            stage_wall = sum(s["wall_seconds"] for s in per_stage.values())
            out[f"workers={n}"] = {"command_seconds": round(wall, 1), "stages_wall_seconds": round(stage_wall, 1),
                                   "rows_per_s": round(rows / stage_wall, 2) if stage_wall else None,
                                   "stages": per_stage}
            assert layout.root.exists()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["overhead", "workers"])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--stage", action="append")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    if args.what == "overhead":
        result = overhead(args.preset, args.stage, args.overrides)
    else:
        result = workers(args.preset, args.stage, args.overrides, args.workers)
    print(json.dumps({"preset": args.preset, "stages": args.stage, "set": args.overrides, args.what: result},
                     indent=2))


if __name__ == "__main__":
    main()
