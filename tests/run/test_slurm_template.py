"""tools/slurm/submit.sh and stage.sbatch, run for real against a stand-in `sbatch` that executes each job at
once, in submission order (so every --dependency=afterok is met): plan, array slices, finalize, per stage.
What it proves: the template's commands, quoting and environment produce the in-process run's bytes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from support.runs import cli_env, data_files, tiny_run

from scalequest_dataset.run import RunLayout

ROOT = Path(__file__).resolve().parents[2]
# Three stages keep the test short; the template does not care how many there are.
# A value with a comma and spaces: sbatch's --export splits on commas, a job's shell on spaces.
SETS = ["--set", "stages.language={rule: ascii, languages: [en], min_score: 0.5}", "--set", "stages.solvability=null", "--set", "stages.difficulty=null", "--set", "stages.responses=null",
        "--set", "stages.reward=null", "--set", "stages.default=null"]

# A stand-in for Slurm's sbatch: parses the options the template uses, runs the job now, prints a job id.
FAKE_SBATCH = r'''#!{python}
import os, subprocess, sys, itertools
args, env, array, wrap, script, log = sys.argv[1:], dict(os.environ), None, None, None, os.environ["FAKE_SLURM_LOG"]
i = 0
while i < len(args):
    a = args[i]
    if a.startswith("--export="):
        for item in a.split("=", 1)[1].split(","):
            if item != "ALL":
                k, v = item.split("=", 1)
                env[k] = v
    elif a.startswith("--array="):
        lo, hi = a.split("=", 1)[1].split("-")
        array = range(int(lo), int(hi) + 1)
    elif a == "--wrap":
        wrap = args[i + 1]; i += 1
    elif a in ("--job-name", "--ntasks", "--cpus-per-task"):
        i += 1
    elif not a.startswith("-"):
        script = a
    i += 1
with open(log, "a") as fh:
    fh.write(" ".join(args) + "\n")
jobs = [dict(env)] if array is None else [
    {**env, "SLURM_ARRAY_TASK_ID": str(t), "SLURM_ARRAY_TASK_COUNT": str(len(array))} for t in array]
job_id = 100 + sum(1 for _ in open(log))
for job_env in jobs:  # like Slurm, a job's output goes to its own file, not to sbatch's caller
    cmd = ["bash", "-c", wrap] if wrap else ["bash", script]
    with open(f"{log}.job-{job_id}-{job_env.get('SLURM_ARRAY_TASK_ID', 0)}.out", "w") as out:
        subprocess.run(cmd, env=job_env, check=True, stdout=out, stderr=subprocess.STDOUT)
print(f"{job_id};cluster-a")  # what --parsable prints on a federated cluster: the id is before the ";"
'''


def test_submit_script_runs_every_stage_through_plan_array_and_finalize(tmp_path, pool):
    reference = tmp_path / "reference"
    tiny_run(reference, pool, *[s for s in SETS if s != "--set"])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(FAKE_SBATCH.replace("{python}", sys.executable))
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    run = tmp_path / "run"
    log = tmp_path / "sbatch.log"
    env = cli_env(RUN=str(run), PRESET="tiny", TASKS="3", FAKE_SLURM_LOG=str(log))
    env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env["PATH"]])
    res = subprocess.run(["bash", str(ROOT / "tools" / "slurm" / "submit.sh"), *SETS], env=env, capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert data_files(run) == data_files(reference)
    layout = RunLayout(run)
    assert layout.complete_stages(("questions", "language", "dedup")) == ["questions", "language", "dedup"]
    calls = log.read_text().splitlines()
    assert len(calls) == 9  # plan, array, finalize for each of the three stages
    assert sum("--array=0-2" in c for c in calls) == 3
    # Each job waits for the right one (the fake's job ids are 101, 102, ... in submission order): a stage's
    # array for its plan, its finalize for the array (not the plan), the next stage's plan for that finalize.
    ids = [str(101 + k) for k in range(len(calls))]
    for k, call in enumerate(calls[1:], start=1):
        waits_for = [a.split(":", 1)[1] for a in call.split() if a.startswith("--dependency=afterok:")]
        assert waits_for == [ids[k - 1]], (k, call)
    finals = [c for c in calls if "scalequest-finalize-" in c]
    assert all(f"afterok:{ids[calls.index(c) - 1]}" in c and "--array" in calls[calls.index(c) - 1] for c in finals)
    from scalequest_dataset.run import records
    from scalequest_dataset.run.records import ShardRecord

    recs = [records.read(ShardRecord, p) for p in layout.state_dir("questions").glob("shard-*.json")]
    assert len(recs) == 5 and len({r.execution.pid for r in recs}) == 3  # each array task ran its own slice
