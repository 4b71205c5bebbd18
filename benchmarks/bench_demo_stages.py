"""Per-stage CPU throughput of a finished run (rows/s, generated tokens/s), from its manifests.

    scalequest demo --out runs/demo && python benchmarks/bench_demo_stages.py runs/demo
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scalequest_dataset.recipe.config import STAGE_ORDER


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    args = ap.parse_args()
    print("| stage | rows in | rows out | generated tokens | seconds | rows/s | tokens/s | engine |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    total_s = total_tok = 0.0
    for stage in STAGE_ORDER:
        path = args.run_dir / "manifests" / f"{stage}.json"
        if not path.exists():
            continue
        m = json.loads(path.read_text())
        rows, out, tok, sec = m["counts"]["rows_in"], m["counts"]["rows_out"], m["cost"]["tokens"], m["cost"]["seconds"]
        total_s += sec
        total_tok += tok
        engines = ", ".join(sorted({f"{e['engine']} {e['version']} ({e['dtype']}, {e['device']})"
                                    for e in m.get("engines", {}).values()})) or "-"
        print(f"| {stage} | {rows} | {out} | {tok} | {sec:.1f} | {rows / sec if sec else 0:.1f} | "
              f"{tok / sec if sec else 0:.0f} | {engines} |")
    print(f"| all stages | | | {total_tok:.0f} | {total_s:.1f} | | {total_tok / total_s if total_s else 0:.0f} | |")


if __name__ == "__main__":
    main()
