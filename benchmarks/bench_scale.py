"""The paper preset rehearsed with `--engine simulate` (issue 22): everything real but the model.

Per stage, each in its own `scalequest run --stage S` process: CPU seconds (user + system, the process's own),
peak RSS (the process's VmHWM-equivalent: wait4's ru_maxrss of that child alone), files and bytes written; then
`publish`, `diff` (the run against its published tag, every file verified), `load` and `status` at that size.
Then the projection to the paper's 2M questions / 5M responses (CPU per input row x the paper's rows) and the
non-model CPU per row as a share of the GPU time per row from `gpu_hours.py`.

The stage CPU includes the simulate engine's own text generation (a stand-in for the GPU's work), so the
non-model share is an upper bound.

    python benchmarks/bench_scale.py --questions 10000 100000 [--out /tmp/bench-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

STAGES = ["questions", "language", "dedup", "decontamination", "solvability", "difficulty", "responses", "reward",
          "default"]
PAPER_RAW = 2_000_000


def timed(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run the CLI; its own CPU seconds, peak RSS (MiB) and wall seconds (wait4: this child's usage alone)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "scalequest_dataset.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}:\n{out.decode()[-3000:]}")
    return {"cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "rss_mb": round(usage.ru_maxrss / 1024),
            "wall_s": round(time.perf_counter() - started, 2)}


def rehearse(n: int, base: Path, env: dict[str, str]) -> dict:
    run, store = base / f"run-{n}", base / f"store-{n}"
    for p in (run, store):
        shutil.rmtree(p, ignore_errors=True)
    sets = [f"stages.questions.generators.0.count={n // 2}", f"stages.questions.generators.1.count={n - n // 2}"]
    common = ["--preset", "scalequest-math", "--engine", "simulate", "--out", str(run), "--no-progress",
              *[a for s in sets for a in ("--set", s)]]
    stages = {}
    for stage in STAGES:
        m = timed(["run", *common, "--stage", stage], env)
        manifest = json.loads((run / "manifests" / f"{stage}.json").read_text())
        files = [f for s in manifest["shards"] for f in s["files"].values()]
        m.update(rows_in=manifest["counts"]["rows_in"], rows_out=manifest["counts"]["rows_out"], files=len(files),
                 mb=round(sum(f["bytes"] for f in files) / 2**20, 1),
                 plan_s=manifest["execution"]["cost"].get("plan_seconds", 0.0),
                 worker_s=manifest["execution"]["cost"]["worker_seconds"])
        stages[stage] = m
        print(n, stage, m, flush=True)
    steps = {"status": timed(["status", str(run)], env),
             "publish": timed(["publish", str(run), "--to", str(store), "--no-progress"], env),
             "diff": timed(["diff", str(run), f"{store}@v1", "--no-progress"], env),
             "load": timed(["load", str(store), "default", "--revision", "v1", "--no-progress"], env)}
    for k, v in steps.items():
        print(n, k, v, flush=True)
    return {"questions": n, "stages": stages, "steps": steps}


def project(result: dict) -> dict:
    """CPU seconds per input row x the paper's rows (the rehearsal's funnel scaled to 2M raw questions), beside the
    GPU seconds per row of `gpu_hours.py` (midpoints, A100)."""
    import gpu_hours

    args = argparse.Namespace(mfu=[0.3, 0.5], question_tokens=70, response_tokens=360, seconds_per_question=0,
                              index_seconds=0)
    gpu = {r.stage: (r.rows, (r.low + r.high) / 2 * 3600) for r in gpu_hours.estimate(args)}
    scale = PAPER_RAW / result["questions"]
    out = {}
    for stage, m in result["stages"].items():
        rows = m["rows_in"] * scale
        cpu_per_row = m["cpu_s"] / max(m["rows_in"], 1)
        key = {"language": "language, dedup", "dedup": "language, dedup", "default": "default (best of 5)"}.get(stage,
                                                                                                            stage)
        gpu_rows, gpu_s = gpu.get(key, (0, 0))
        gpu_per_row = gpu_s / gpu_rows if gpu_rows and gpu_s else 0.0
        out[stage] = {"rows": round(rows), "cpu_hours": round(cpu_per_row * rows / 3600, 2),
                      "cpu_ms_per_row": round(cpu_per_row * 1000, 3),
                      "gpu_ms_per_row": round(gpu_per_row * 1000, 1),
                      "share": round(cpu_per_row / gpu_per_row, 4) if gpu_per_row else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-scale"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results = [rehearse(n, args.out, env) for n in args.questions]
    print("\n| raw questions | stage | rows in | CPU s | plan s | peak RSS MB | files | MB |\n|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for stage, m in r["stages"].items():
            print(f"| {r['questions']:,} | {stage} | {m['rows_in']:,} | {m['cpu_s']} | {m['plan_s']} | {m['rss_mb']} | "
                  f"{m['files']} | {m['mb']} |")
        for step, m in r["steps"].items():
            print(f"| {r['questions']:,} | `{step}` | | {m['cpu_s']} | | {m['rss_mb']} | | |")
    proj = project(results[-1])
    print(f"\nProjection from {results[-1]['questions']:,} to {PAPER_RAW:,} raw questions:\n")
    print("| stage | rows | CPU-hours | CPU ms/row | A100 ms/row | CPU/GPU |\n|---|---:|---:|---:|---:|---:|")
    for stage, p in proj.items():
        share = f"{100 * p['share']:.2f} %" if p["share"] is not None else "-"
        print(f"| {stage} | {p['rows']:,} | {p['cpu_hours']} | {p['cpu_ms_per_row']} | {p['gpu_ms_per_row'] or '-'} | "
              f"{share} |")
    (args.out / "results.json").write_text(json.dumps({"runs": results, "projection": proj}, indent=1))


if __name__ == "__main__":
    main()
