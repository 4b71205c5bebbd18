"""Diff two 1M-row revisions differing in 1% of rows in every shard (goal: < 3 s), and two identical ones (goal:
< 0.3 s), with peak memory. Measured in fresh processes, imports included. `diff` checks every file's bytes
against its manifest before comparing (the default); `--no-verify` trusts the manifests and reads nothing for
identical revisions: both are measured.

    python benchmarks/bench_diff.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from measure import measure
from synthetic import make_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a = make_run(Path(tmp) / "a", args.rows)
        b = make_run(Path(tmp) / "b", args.rows, change_every=100)
        same = Path(tmp) / "same"
        shutil.copytree(a, same)
        results = {"rows": args.rows}
        for verify in (True, False):
            name = "verified" if verify else "no_verify"
            results[f"changed_1_percent_{name}"] = measure(f"""
                from scalequest_dataset.diffing.compare import diff
                report = diff({str(a)!r}, {str(b)!r}, sample=5, verify={verify})
                (s,) = report.stages
                assert s.rows["changed"] == {(args.rows + 99) // 100}, s.rows["changed"]""")
            results[f"identical_{name}"] = measure(f"""
                from scalequest_dataset.diffing.compare import diff
                assert diff({str(a)!r}, {str(same)!r}, verify={verify}).identical""")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
