"""Publish and load a 1M-row stage (synthetic rows of realistic lengths) to the local git store and to the
local Hub server (the test server, real huggingface_hub/datasets clients): seconds and peak memory.

    python benchmarks/bench_store.py --rows 1000000
    python benchmarks/bench_store.py --files 1000 [--before REV]

`--files N`: a stage of N small Parquet files (10 rows each) into the local git store: publish, load, and the
store's size on disk, for the git store's pack settings (no zlib over Parquet vs git's default) and, with
`--before REV`, for the package as it was at REV (its git store: hash-object + update-index per file).
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


def du(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def many_files(files: int, before: str | None) -> dict[str, object]:
    import subprocess

    results: dict[str, object] = {"files": files}
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp) / "run", files * 10, rows_per_shard=10)
        results["parquet_mb"] = round(sum(p.stat().st_size for p in run.rglob("*.parquet")) / 2**20, 1)
        variants = {"no zlib (PACK_SETTINGS)": "", "git default compression":
                    "git.PACK_SETTINGS = ('-c', 'core.bigFileThreshold=1')"}
        if before:  # the git store module as it was at REV, in today's package (records moved on since)
            old = Path(tmp) / "git_before.py"
            root = Path(__file__).resolve().parents[1]
            old.write_bytes(subprocess.run(["git", "-C", str(root), "show",
                                            f"{before}:scalequest_dataset/revisions/stores/git.py"],
                                           capture_output=True, check=True).stdout)
            variants[f"before ({before}): per-file hash-object + update-index"] = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("scalequest_dataset.revisions.stores.git_before", {str(old)!r})
module = importlib.util.module_from_spec(spec); sys.modules[spec.name] = module; spec.loader.exec_module(module)
from scalequest_dataset.revisions import stores; stores.KINDS["file"] = 'git_before'"""
        for name, patch in variants.items():
            store = Path(tmp) / f"store-{len(results)}"
            env = {"SCALEQUEST_CACHE": str(Path(tmp) / f"cache-{len(results)}")}
            publish = measure(f"""
                from scalequest_dataset.revisions.stores import git
                exec({patch!r})
                from scalequest_dataset.revisions.publish import publish
                publish({str(run)!r}, {str(store)!r})""", env)
            load = measure(f"""
                from scalequest_dataset.revisions.stores import git
                exec({patch!r})
                import scalequest_dataset
                ds = scalequest_dataset.load_dataset({str(store)!r}, "default", revision="v1")
                assert ds.num_rows == {files * 10}""", env)
            results[name] = {"publish": publish, "load": load, "store_mb": du(store),
                             "packs": len(list((store / "objects" / "pack").glob("*.pack"))),
                             "loose_objects": sum(1 for p in (store / "objects").glob("??/*"))}
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=0)
    ap.add_argument("--before", default=None)
    args = ap.parse_args()
    if args.files:
        print(json.dumps(many_files(args.files, args.before), indent=2))
        return
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
