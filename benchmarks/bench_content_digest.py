"""The content digest's cost while writing a 1M-row stage (issue 11; goal: under 5 % of write time): the same
tables written by `storage.write_table` (Parquet + the sha256 of the bytes as they are written + the content
digest) and timed part by part, best of N.

    python benchmarks/bench_content_digest.py --rows 1000000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from synthetic import _texts

from scalequest_dataset.run import files as storage
from scalequest_dataset.run.files import arrow_schema, content_digest, write_table
from scalequest_dataset.stages import STAGES


def tables(rows: int, per_shard: int) -> list[pa.Table]:
    schema = arrow_schema(STAGES["default"].features)
    out = []
    for i, start in enumerate(range(0, rows, per_shard)):
        n = min(per_shard, rows - start)
        rng = np.random.default_rng([0, i])
        out.append(pa.Table.from_pylist([
            {"id": f"gen-{start + j:08d}", "query": q, "response": r, "response_id": f"gen-{start + j:08d}-r0",
             "generator": "gen", "reward": float(w), "difficulty": 0.5, "n_candidates": 5}
            for j, (q, r, w) in enumerate(zip(_texts(rng, n, 55), _texts(rng, n, 240), rng.normal(0, 1, n),
                                              strict=True))], schema=schema))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--rows-per-shard", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = tables(args.rows, args.rows_per_shard)
    best = {"write_without_content_digest": float("inf"), "write": float("inf"),
            "content_digest_alone": float("inf")}

    def write_all(folder: Path) -> float:
        started = time.perf_counter()
        for i, table in enumerate(data):
            write_table(folder / f"{i}.parquet", table)
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            # A shard write as the worker does it (Parquet, sha256 of the bytes as written, fsync, rename), with
            # the content digest computed on its thread, and the same with the digest stubbed out.
            best["write"] = min(best["write"], write_all(Path(tmp)))
            storage.content_digest = lambda table: "stub"
            best["write_without_content_digest"] = min(best["write_without_content_digest"], write_all(Path(tmp)))
            storage.content_digest = content_digest
            started = time.perf_counter()
            for table in data:
                content_digest(table)
            best["content_digest_alone"] = min(best["content_digest_alone"], time.perf_counter() - started)
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.parquet"))
    base = best["write_without_content_digest"]
    print(json.dumps({"rows": args.rows, "shards": len(data), "parquet_mb": round(size / 2**20, 1),
                      "arrow_mb": round(sum(t.nbytes for t in data) / 2**20, 1),
                      **{f"{k}_seconds": round(v, 2) for k, v in best.items()},
                      "content_digest_adds_to_write_percent": round(100 * (best["write"] / base - 1), 1),
                      "content_digest_alone_share_of_write_percent":
                          round(100 * best["content_digest_alone"] / base, 1)}, indent=2))


if __name__ == "__main__":
    main()
