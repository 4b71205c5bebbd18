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
    gpu = {r.stage: (r.low + r.high) / 2 for r in gpu_hours.estimate(args)}  # A100-hours at the paper's size
    scale = PAPER_RAW / result["questions"]
    out = {}
    for stage, m in result["stages"].items():
        rows = m["rows_in"] * scale
        cpu_hours = m["cpu_s"] * scale / 3600
        gpu_h = gpu.get(stage, 0.0)
        out[stage] = {"rows": round(rows), "cpu_hours": round(cpu_hours, 3),
                      "cpu_ms_per_row": round(m["cpu_s"] / max(m["rows_in"], 1) * 1000, 3),
                      "gpu_hours": round(gpu_h, 1), "share": round(cpu_hours / gpu_h, 5) if gpu_h else None}
    cpu_total, gpu_total = sum(p["cpu_hours"] for p in out.values()), sum(gpu.values())
    out["total"] = {"rows": PAPER_RAW, "cpu_hours": round(cpu_total, 2), "cpu_ms_per_row": None,
                    "gpu_hours": round(gpu_total, 1), "share": round(cpu_total / gpu_total, 5)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--questions", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-scale"))
    ap.add_argument("--project", type=Path, help="only print the projection of a results.json")
    args = ap.parse_args()
    if args.project:
        report_projection(json.loads(args.project.read_text())["runs"][-1])
        return
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
    report_projection(results[-1])
    (args.out / "results.json").write_text(json.dumps({"runs": results, "projection": project(results[-1])},
                                                      indent=1))


def report_projection(result: dict) -> None:
    proj = project(result)
    print(f"\nProjection from {result['questions']:,} to {PAPER_RAW:,} raw questions (CPU x {PAPER_RAW // result['questions']}):\n")
    print("| stage | rows in | non-model CPU-hours | CPU ms/row | A100-hours (gpu_hours.py) | CPU / GPU |\n"
          "|---|---:|---:|---:|---:|---:|")
    for stage, p in proj.items():
        share = f"{100 * p['share']:.2f} %" if p["share"] is not None else "-"
        print(f"| {stage} | {p['rows']:,} | {p['cpu_hours']} | {p['cpu_ms_per_row'] or '-'} | {p['gpu_hours'] or '-'} | "
              f"{share} |")


if __name__ == "__main__":
    main()
