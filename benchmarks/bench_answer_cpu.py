"""The self-consistency difficulty stage's CPU per question at the paper preset with `--engine simulate`, for two
source trees (e.g. before and after the answers moved onto a thread beside the engine call, issue 22).

One run directory is built up to `solvability` with the first tree, copied once per tree and `--repeat`, and
`scalequest run --stage difficulty` timed in each copy in its own process (wait4: user + system CPU of that child,
start-up and imports included), interleaved. Also read: the stage's `answers s` from its manifest (trees that record
it), and the sha256 of every difficulty data file, which must be the same for every tree.

    python benchmarks/bench_answer_cpu.py --code /tmp/before --code . --questions 10000 --repeat 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PRIOR = ["questions", "language", "dedup", "decontamination", "solvability"]


def run(code: Path, args: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code.resolve()), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    # cwd is the tree: `python -m` puts the working directory first on the path
    proc = subprocess.Popen([sys.executable, "-m", "scalequest_dataset.cli", "run", *args], env=env, cwd=code.resolve(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{code}: run {' '.join(args)} failed:\n{out.decode()[-3000:]}")
    return {"cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.perf_counter() - started}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--code", type=Path, action="append", required=True, help="a source tree (repeatable)")
    ap.add_argument("--questions", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-answer-cpu"))
    args = ap.parse_args()
    n = args.questions
    base = args.out / f"base-{n}"
    common = ["--preset", "scalequest-math", "--engine", "simulate", "--no-progress",
              "--set", f"stages.questions.generators.0.count={n // 2}",
              "--set", f"stages.questions.generators.1.count={n - n // 2}"]
    if not (base / "manifests" / "solvability.json").is_file():
        shutil.rmtree(base, ignore_errors=True)
        for stage in PRIOR:
            run(args.code[0], [*common, "--out", str(base), "--stage", stage])
    results: dict[str, list[dict]] = {str(c): [] for c in args.code}
    for r in range(args.repeat):
        for i, code in enumerate(args.code):
            out = args.out / f"run-{i}-{r}"
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(base, out, symlinks=True)
            m = run(code, [*common, "--out", str(out), "--stage", "difficulty"])
            manifest = json.loads((out / "manifests" / "difficulty.json").read_text())
            m["rows_in"] = manifest["counts"]["rows_in"]
            m["answers_s"] = manifest["execution"]["cost"].get("answer_seconds")
            m["data"] = hashlib.sha256(b"".join(hashlib.sha256(p.read_bytes()).digest() for p in
                                                sorted((out / "data" / "difficulty").glob("*.parquet")))).hexdigest()
            results[str(code)].append(m)
            print(code, r, {k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()}, flush=True)
    digests = {m["data"] for ms in results.values() for m in ms}
    print(f"\ndifficulty data identical across trees and repeats: {len(digests) == 1}\n")
    print("| code | questions in | CPU s (each run) | CPU ms/question (best) | answers s | wall s (best) |")
    print("|---|---:|---|---:|---:|---:|")
    for code, ms in results.items():
        best = min(ms, key=lambda m: m["cpu_s"])
        answers = best["answers_s"]
        cpus = ", ".join(f"{m['cpu_s']:.2f}" for m in ms)
        print(f"| {code} | {best['rows_in']:,} | {cpus} | "
              f"{1000 * best['cpu_s'] / best['rows_in']:.3f} | {'-' if answers is None else f'{answers:.2f}'} | "
              f"{min(m['wall_s'] for m in ms):.1f} |")
    if len(digests) != 1:
        sys.exit("the trees wrote different difficulty data")


if __name__ == "__main__":
    main()
