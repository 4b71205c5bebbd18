"""Publish and load a 1M-row stage (synthetic rows of realistic lengths) to the local git store and to the
local Hub server (the test server, real huggingface_hub/datasets clients): seconds and peak memory.

    python benchmarks/bench_store.py --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from measure import measure
from synthetic import make_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.hub_server import HubServer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    results: dict[str, object] = {"rows": args.rows}
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run", args.rows)
        results["parquet_mb"] = round(sum(p.stat().st_size for p in run.rglob("*.parquet")) / 2**20, 1)
        store = Path(tmp) / "store"
        cache = {"SCALEQUEST_CACHE": str(Path(tmp) / "cache"), "HF_HOME": str(Path(tmp) / "hf"),
                 "HF_DATASETS_CACHE": str(Path(tmp) / "hf" / "datasets")}
        results["local_publish"] = measure(f"""
            from scalequest_dataset.revisions.publish import publish
            publish({str(run)!r}, {str(store)!r})""", cache)
        results["local_republish_no_commit"] = measure(f"""
            from scalequest_dataset.revisions.publish import publish
            assert not publish({str(run)!r}, {str(store)!r})[0].created""", cache)
        results["local_load"] = measure(f"""
            import scalequest_dataset
            ds = scalequest_dataset.load_dataset({str(store)!r}, "default", revision="v1")
            assert ds.num_rows == {args.rows}""", cache)
        with HubServer() as hub:
            env = {**hub.client_env(Path(tmp) / "hf_home"), "SCALEQUEST_CACHE": str(Path(tmp) / "cache2")}
            results["hub_publish"] = measure(f"""
                from scalequest_dataset.revisions.publish import publish
                publish({str(run)!r}, "hf://datasets/bench/one-million")""", env)
            results["hub_load"] = measure(f"""
                import datasets
                ds = datasets.load_dataset("bench/one-million", "default", revision="v1", split="train")
                assert ds.num_rows == {args.rows}""", env)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
