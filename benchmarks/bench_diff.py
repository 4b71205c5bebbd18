"""`scalequest diff` beside DuckDB's full outer join on `id` over the same Parquet files, in one run: two 1M-row
revisions differing in 1 % of rows in every shard, and two identical ones. Each measurement is a fresh process
(imports included; `diff` is the CLI command, its json report written), the tools interleaved, best of `--repeats`; wall seconds, CPU seconds (all threads, user +
system: steadier than wall time on a shared machine) and peak memory. `diff` checks every file's bytes against
its manifest before comparing (the default); `--no-verify` trusts the manifests: both are measured.

DuckDB is a benchmark-only dependency (`pip install -e .[bench]`). Its query counts the rows added, removed and
changed in any column (IS DISTINCT FROM, so NULLs compare; unlike `diff` it calls -0.0 and 0.0 the same).

    python benchmarks/bench_diff.py --rows 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from measure import measure
from synthetic import make_run

DUCKDB = """
import duckdb
a, b = {a!r} + "/data/default/*.parquet", {b!r} + "/data/default/*.parquet"
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{{a}}')").fetchall()]
differs = " OR ".join(f"a.{{c}} IS DISTINCT FROM b.{{c}}" for c in cols if c != "id")
added, removed, changed = con.execute(f'''
    SELECT count(*) FILTER (WHERE a.id IS NULL), count(*) FILTER (WHERE b.id IS NULL),
           count(*) FILTER (WHERE a.id IS NOT NULL AND b.id IS NOT NULL AND ({{differs}}))
    FROM read_parquet('{{a}}') a FULL OUTER JOIN read_parquet('{{b}}') b ON a.id = b.id''').fetchone()
assert (added, removed, changed) == (0, 0, {changed}), (added, removed, changed)
"""

OURS = """
import json, os, tempfile
from scalequest_dataset.cli import main
out = os.path.join(tempfile.mkdtemp(), "report.json")
code = main(["diff", {a!r}, {b!r}, "--sample", "5", "--format", "json", "-o", out] + ([] if {verify} else ["--no-verify"]))
report = json.load(open(out))
(s,) = report["stages"]
changed = s["splits"]["train"]["rows"].get("changed", 0)
assert changed == {changed} and report["identical"] == {identical} and code == (0 if {identical} else 1), (code, changed)
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, help="make the revisions here (or reuse them) instead of a temporary folder")
    args = ap.parse_args()
    changed = (args.rows + 99) // 100
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        a, b, same = root / "a", root / "b", root / "same"
        if not (a / "manifests").is_dir():
            make_run(a, args.rows)
        if not (b / "manifests").is_dir():
            make_run(b, args.rows, change_every=100)
        if not (same / "manifests").is_dir():
            shutil.copytree(a, same)
        cases = {
            "1 % changed: duckdb full outer join": DUCKDB.format(a=str(a), b=str(b), changed=changed),
            "1 % changed: diff (verified)": OURS.format(a=str(a), b=str(b), verify=True, changed=changed,
                                                        identical=False),
            "1 % changed: diff --no-verify": OURS.format(a=str(a), b=str(b), verify=False, changed=changed,
                                                         identical=False),
            "identical: duckdb full outer join": DUCKDB.format(a=str(a), b=str(same), changed=0),
            "identical: diff (verified)": OURS.format(a=str(a), b=str(same), verify=True, changed=0, identical=True),
            "identical: diff --no-verify": OURS.format(a=str(a), b=str(same), verify=False, changed=0,
                                                       identical=True),
        }
        runs: dict[str, list[dict]] = {name: [] for name in cases}
        for _ in range(args.repeats):  # interleaved: a slow moment of the machine hits every tool alike
            for name, code in cases.items():
                runs[name].append(measure(code))
                print(name, runs[name][-1], flush=True)
    best = {name: {"seconds": min(r["seconds"] for r in rs), "cpu_seconds": min(r["cpu_seconds"] for r in rs),
                   "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "all_seconds": [r["seconds"] for r in rs]}
            for name, rs in runs.items()}
    print(json.dumps({"rows": args.rows, "repeats": args.repeats, "best": best}, indent=2))


if __name__ == "__main__":
    main()
