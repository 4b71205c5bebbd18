"""What content-defined chunking saves when a v2 changes 1 % of rows: the bytes of v2's Parquet files that the
Hub would not store or upload again (a chunk-level comparison at xet's parameters, `dedup.py`), with our writer
as published (page index + CDC, as `datasets` writes) and with CDC off (the writer before issue 23), for three
shapes of the same 1 % change in every shard:

- spread: every 100th row's response changed in place (the worst case for any chunking: every page touched);
- block: 1 % of each shard's rows, contiguous, changed in place (a regenerated slice);
- insert: 1 % more rows inserted in the middle of each shard (new ids: everything after them shifts).

    python benchmarks/bench_cdc.py --rows 100000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from dedup import dedup
from synthetic import _texts

from scalequest_dataset.run import files
from scalequest_dataset.run.files import write_rows
from scalequest_dataset.stages import STAGES

SHARD = 10_000


def _rows(shard: int, n: int) -> list[dict]:
    rng = np.random.default_rng([7, shard])
    queries, responses, rewards = _texts(rng, n, 55), _texts(rng, n, 240), rng.normal(0, 1, n)
    return [{"id": f"gen-{shard * SHARD + j:08d}", "query": queries[j], "response": responses[j],
             "response_id": f"gen-{shard * SHARD + j:08d}-r0", "generator": "gen", "reward": float(rewards[j]),
             "difficulty": float(j % 10) / 10, "n_candidates": 5} for j in range(n)]


def _v2(rows: list[dict], shape: str) -> list[dict]:
    n, k = len(rows), max(1, len(rows) // 100)
    if shape == "spread":
        return [{**r, "response": r["response"] + " (revised)"} if j % 100 == 0 else r for j, r in enumerate(rows)]
    if shape == "block":
        lo = n // 2
        return [{**r, "response": r["response"] + " (revised)"} if lo <= j < lo + k else r for j, r in enumerate(rows)]
    new = [{**rows[n // 2 + j], "id": rows[n // 2 + j]["id"] + "-new", "response": "a new answer " * 100}
           for j in range(k)]
    return rows + new  # written sorted by id: each new row lands beside the one it was made from


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    args = ap.parse_args()
    features = STAGES["default"].features
    shards = [_rows(i, min(SHARD, args.rows - i * SHARD)) for i in range((args.rows + SHARD - 1) // SHARD)]
    published = dict(files.PARQUET_OPTIONS)
    before = {k: v for k, v in published.items() if k not in ("use_content_defined_chunking", "write_page_index")}
    results: dict = {"rows": args.rows}
    with tempfile.TemporaryDirectory() as tmp:
        for writer, options in (("page index + CDC (published)", published), ("no CDC (before)", before)):
            files.PARQUET_OPTIONS.clear()
            files.PARQUET_OPTIONS.update(options)
            files.HAS_CDC = "use_content_defined_chunking" in options
            root = Path(tmp) / writer.split()[0]
            v1 = [Path(write_rows(root / "v1" / f"{i:05d}.parquet", rows, features)["file"]) for i, rows in
                  enumerate(shards)]
            v1 = [root / "v1" / p for p in v1]
            for shape in ("spread", "block", "insert"):
                v2 = [root / shape / f"{i:05d}.parquet" for i in range(len(shards))]
                for path, rows in zip(v2, shards, strict=True):
                    write_rows(path, _v2(rows, shape), features)
                d = dedup(v1, v2)
                d["dedup_share"] = round(d["dedup_bytes"] / d["bytes"], 4)
                results[f"{writer} / {shape}"] = d
                print(writer, shape, d, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
