"""`scalequest run --backend ray` as a Ray job: submit it from a checkout to a running cluster.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python tools/ray_job.py --preset scalequest-math --out /shared/run --workers 8

Every argument is `scalequest run`'s (`--stage`, `--set`, `--gpus-per-worker`, ...); `--backend ray` is implied
and, inside a job, Ray sets RAY_ADDRESS so the driver attaches to the cluster it was submitted to. The working
directory (this checkout, without what .gitignore lists) is uploaded and put first on every worker's
PYTHONPATH, so the actors run this code; its dependencies (torch, vLLM, pyarrow...) must be installed on every
node. `--out` must be on storage every node mounts at the same path: each actor checks, and fails naming the
directory and its node if it cannot see it. Re-submitting the same command resumes from the completion records.
Progress bars are off unless `--progress` is given (job logs are not a terminal)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `python tools/ray_job.py` puts tools/ first on sys.path; the package is the checkout's (the job's working dir).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scalequest_dataset.cli import main


def job_argv(argv: list[str]) -> list[str]:
    """`scalequest run` arguments for the job: the Ray backend, and no progress bars unless asked for."""
    if "--backend" in argv or any(a.startswith("--backend=") for a in argv):
        raise SystemExit("tools/ray_job.py always runs `scalequest run --backend ray`: leave out --backend")
    args = [a for a in argv if a != "--progress"]
    if "--progress" not in argv and "--no-progress" not in args:
        args.append("--no-progress")
    return ["run", "--backend", "ray", *args]


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(job_argv(sys.argv[1:])))
