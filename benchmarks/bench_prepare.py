"""The whole-input passes at plan time (dedup, decontamination) on 1 and on N processes (run/prepare.py), over a run
directory's real input (for instance the simulated paper preset of `bench_scale.py`): wall seconds, CPU seconds
of every process (this one's and the parts'), and that the prepared tables are the same bytes.

    python benchmarks/bench_prepare.py /tmp/bench-1m/run-1000000 --stage dedup decontamination --processes 1 2
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq  # noqa: E402

from scalequest_dataset.run import RunLayout  # noqa: E402
from scalequest_dataset.run import prepare as prep  # noqa: E402
from scalequest_dataset.run.plan import load_config, read_manifest  # noqa: E402
from scalequest_dataset.stages import STAGES  # noqa: E402


def cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--stage", nargs="+", default=["dedup", "decontamination"])
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    layout = RunLayout(args.run_dir)
    config = load_config(layout)
    for name in args.stage:
        manifest = read_manifest(layout, config.input_of(name))
        shards = [s for s in manifest.shards if "train" in s.files]
        paths = [layout.data_dir(manifest.stage) / s.files["train"].file for s in shards]
        rows = [s.files["train"].rows for s in shards]
        tables = {}
        for n in args.processes:
            stage = STAGES[name](config)
            started, cpu0 = time.perf_counter(), cpu()
            table, _ = prep.prepare_input(stage, paths, rows, n)
            wall, used = time.perf_counter() - started, cpu() - cpu0
            sink = io.BytesIO()
            pq.write_table(table, sink)
            tables[n] = sink.getvalue()
            print(f"{name}: {sum(rows):,} input rows in {len(paths)} files, {n} process(es): {wall:.1f} s wall, "
                  f"{used:.1f} CPU-s, prepared {table.num_rows:,} rows", flush=True)
        same = len(set(tables.values())) == 1
        print(f"{name}: prepared tables {'byte-identical' if same else 'DIFFER'} across {args.processes}")


if __name__ == "__main__":
    main()
