"""Diff two 1M-row revisions differing in 1% of rows (goal: < 10 s, < 2 GB), and two identical ones
(goal: < 1 s). Measured in fresh processes, imports included.

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
        changed = measure(f"""
            from scalequest_dataset.diffing import diff
            report = diff({str(a)!r}, {str(b)!r}, sample=5)
            (s,) = report.stages
            assert s.rows["changed"] == {(args.rows + 99) // 100}, s.rows["changed"]""")
        identical = measure(f"""
            from scalequest_dataset.diffing import diff
            assert diff({str(a)!r}, {str(same)!r}).identical""")
    print(json.dumps({"rows": args.rows, "changed_1_percent": changed, "identical": identical}, indent=2))


if __name__ == "__main__":
    main()
