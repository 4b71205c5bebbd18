"""`scalequest run | status | finalize | demo | publish | log | load | diff | regenerate | tiny-model |
demo-model | presets`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .config import ConfigError, preset_names, resolve_config
from .engines import ENGINES
from .models import cache_dir
from .run.backends import BACKENDS


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run (or resume) the pipeline for a preset into a run directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None, help=f"built-in preset ({', '.join(preset_names())}) or a YAML path")
    src.add_argument("--config", default=None, help="a resolved config file (e.g. RUN/config.yaml)")
    p.add_argument("--out", required=True, type=Path, help="run directory (created; resumed if it exists)")
    p.add_argument("--stage", action="append", help="run only this stage (repeatable); default: all, in order")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set seed=7 --set stages.responses.samples=3")
    p.add_argument("--engine", choices=sorted(ENGINES), help="override engine.name")
    _add_backend(p)
    p.add_argument("--shard", help="run only slice i/N of each stage's shards (a Slurm array task)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=sorted(BACKENDS), default="local",
                   help="where shards run: local (in-process, or --workers processes) or ray")
    p.add_argument("--workers", type=int, default=1, help="worker processes (local) or actors (ray), each with its "
                   "own device and engines")
    p.add_argument("--gpus-per-worker", type=int, default=1, help="GPUs per worker (tensor parallelism)")
    p.add_argument("--ray-address", help="a running Ray cluster (default: RAY_ADDRESS, else a local one)")


def make_backend(args: argparse.Namespace):
    from .run.backends import backend_class

    cls = backend_class(args.backend)
    if args.backend == "ray":
        return cls(workers=args.workers, gpus_per_worker=args.gpus_per_worker, address=args.ray_address)
    if args.ray_address:
        raise ConfigError("--ray-address goes with --backend ray")
    return cls(workers=args.workers, gpus_per_worker=args.gpus_per_worker)


def cmd_run(args: argparse.Namespace) -> int:
    from .run import Runner, ShardSlice

    source = args.config or args.preset or "demo"
    config = resolve_config(source, args.overrides, args.engine)
    shard = ShardSlice.parse(args.shard) if args.shard else None
    if shard is not None and (args.workers != 1 or args.backend != "local"):
        raise ConfigError("--shard i/N runs one slice in this process: leave out --workers and --backend")
    with make_backend(args) as backend:
        Runner(args.out, config, backend, show_progress=not args.no_progress).run(args.stage or None, shard)
    _print_status(args.out)
    _print_cost(args.out, args.stage or config.stage_names())
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    from .run import finalize

    states = finalize(args.run_dir)
    _print_status(args.run_dir)
    missing = [s for s in states if s.shards is not None and not s.complete]
    if missing:
        from .run.runner import _ranges

        for s in missing:
            print(f"error: stage {s.stage!r}: shards {_ranges(s.missing)} are not complete; run them "
                  f"(`scalequest run --config {args.run_dir}/config.yaml --out {args.run_dir} --stage {s.stage} "
                  f"--shard i/N`), then finalize again", file=sys.stderr)
        return 2
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Every stage of the `demo` preset, each published as a revision of a local store; then the funnel,
    one stage loaded back from its tag, and where things are."""
    from .funnel import format_funnel, funnel
    from .loading import load_dataset
    from .publishing import publish
    from .run import Runner
    from .run.backends.local import LocalBackend
    from .run.layout import RunLayout
    from .run.plan import read_manifest

    config = resolve_config(args.preset, args.overrides)
    with LocalBackend() as backend:
        Runner(args.out, config, backend, show_progress=not args.no_progress).run()
    stages = config.stage_names()
    store = args.store or args.out.with_name(args.out.name + "-store")
    print(f"\npublished to {store}:")
    results = publish(args.out, store, stages, args.tag_prefix)
    for r in results:
        print("  " + r.describe())
    layout = RunLayout(args.out)
    print("\nfunnel:")
    print(format_funnel(funnel({s: read_manifest(layout, s) for s in stages})))
    last = stages[-1]
    tag = args.tag_prefix
    ds = load_dataset(store, last, revision=tag)
    print(f"\nloaded back: scalequest_dataset.load_dataset({str(store)!r}, {last!r}, revision={tag!r})")
    print(f"  {ds.num_rows} rows, columns {ds.column_names}")
    if ds.num_rows:
        row = ds[0]
        print(f"  first row {row['id']}:")
        for column in ("query", "response"):
            if row.get(column):
                print(f"    {column}: {row[column][:400]!r}")
    print("\nwhere things are:")
    print(f"  run directory: {Path(args.out).resolve()}  (data/<stage>/*.parquet, manifests/<stage>.json, logs/)")
    print(f"  store:         {Path(store).resolve()}  (`scalequest log {store}`, `git clone {store}`)")
    print(f"  models:        {cache_dir() / 'models'}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from .publishing import publish

    if args.all and args.stage:
        raise ConfigError("use either --stage or --all")
    publish(args.run_dir, args.to, args.stage or None, args.tag_prefix, args.force, say=print)
    print(f"store: {args.to}")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    from .publishing import log

    rows = log(args.target)
    if not rows:
        print(f"{args.target}: no tags yet")
        return 0
    print(f"{'tag':<24} {'commit':<12} {'stage':<12} {'rows':>9}  fingerprint")
    for r in rows:
        rows_text = f"{r['rows']:>9}" if r["rows"] is not None else f"{'-':>9}"
        print(f"{r['tag']:<24} {r['commit'][:12]:<12} {r['stage']:<12} {rows_text}  {r['fingerprint'] or '-'}")
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from .loading import load_dataset

    ds = load_dataset(args.source, args.stage, revision=args.revision, split=args.split)
    print(ds)
    for row in ds.select(range(min(args.head, ds.num_rows))):
        print({k: (v[:120] + "..." if isinstance(v, str) and len(v) > 120 else v) for k, v in row.items()})
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from .diffing import diff, render

    report = diff(args.a, args.b, stage=args.stage, sample=args.sample, verify=not args.no_verify)
    text = render(report, args.format)
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    return 0 if report.identical else 1


def cmd_regenerate(args: argparse.Namespace) -> int:
    import json

    from .regeneration import regenerate

    shards = [int(x) for x in args.shards.split(",")] if args.shards else None
    report = regenerate(args.source, args.stage, shards=shards, sample=args.sample, engine=args.engine,
                        scratch=args.scratch, trust_remote_code=args.trust_remote_code, attest=args.attest)
    print(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.describe())
    return 0 if report.all_match else 1


def cmd_status(args: argparse.Namespace) -> int:
    _print_status(args.run_dir)
    return 0


def _print_status(run_dir: Path) -> None:
    """Stages, shards done of planned, rows, and state. Reads only."""
    from .run import RunLayout, load_config, status

    layout = RunLayout(run_dir).require()
    config = load_config(layout)
    print(f"run: {layout.root}  (preset {config.preset}, seed {config.seed})")
    print(f"{'stage':<12} {'shards':>11} {'rows':>9}  state")
    for s in status(layout):
        shards = f"{len(s.done)}/{s.shards}" if s.shards is not None else "-"
        state = "complete" if s.complete else ("partial" if s.done else "not started")
        print(f"{s.stage:<12} {shards:>11} {s.rows:>9}  {state}")


def _print_cost(run_dir: Path, stages: list[str]) -> None:
    """What each complete stage cost, from its manifest: wall seconds, worker-seconds, GPU-seconds, tokens."""
    from .run import RunLayout
    from .run.plan import read_manifest

    layout = RunLayout(run_dir)
    manifests = [m for m in (read_manifest(layout, s) for s in stages) if m is not None]
    if not manifests:
        return
    print(f"\ncost{'':<8} {'wall s':>9} {'worker s':>9} {'GPU s':>9} {'tokens in':>11} {'tokens out':>11}")
    for m in manifests:
        c = m.execution.cost
        print(f"  {m.stage:<10} {c.wall_seconds:>9.1f} {c.worker_seconds:>9.1f} {c.gpu_seconds:>9.1f} "
              f"{m.tokens.prompt:>11,} {m.tokens.completion:>11,}")


def cmd_model(args: argparse.Namespace) -> int:
    from .models import build_tiny_model, convert_demo_model

    out = args.dir
    if args.command == "tiny-model":
        build_tiny_model(out, seed=args.seed)
    else:
        convert_demo_model(out)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scalequest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    p = sub.add_parser("demo", help="run the demo preset end to end and print the funnel (README command 1)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--store", type=Path, help="local store to publish to (default: OUT-store)")
    p.add_argument("--tag-prefix", default="v1")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("publish", help="publish a run's complete stages: one commit and one tag per stage")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--to", required=True, help="a local store path (a git repository, created on first use) "
                   "or hf://datasets/ORG/NAME")
    p.add_argument("--stage", action="append", help="publish only this stage (repeatable)")
    p.add_argument("--all", action="store_true", help="every complete stage, in order (the default)")
    p.add_argument("--tag-prefix", default="v1", help="tags are PREFIX-STAGE, and PREFIX for the final stage")
    p.add_argument("--force", action="store_true", help="move a tag that exists with other content")
    p = sub.add_parser("log", help="revisions of a store: tags, stages, rows, fingerprints")
    p.add_argument("target")
    p = sub.add_parser("load", help="load a stage at a revision and print the first rows")
    p.add_argument("source", help="a store path, a Hub repo id ORG/NAME, or a run directory")
    p.add_argument("stage", nargs="?", default="default")
    p.add_argument("--revision")
    p.add_argument("--split", default="train")
    p.add_argument("--head", type=int, default=3)
    p = sub.add_parser("diff", help="what changed between two versions, and why (exit 0 identical, 1 different)")
    p.add_argument("a", help="RUN_DIR, STORE_PATH@REV or ORG/NAME@REV")
    p.add_argument("b")
    p.add_argument("--stage")
    p.add_argument("--format", choices=["text", "json", "markdown", "html"], default="text")
    p.add_argument("--sample", type=int, default=5, help="changed rows to show")
    p.add_argument("--output", "-o", help="write the report to this file")
    p.add_argument("--no-verify", action="store_true", help="trust the manifests: do not check the files' bytes")
    p = sub.add_parser("regenerate", help="rebuild shards of a published stage and compare their sha256")
    p.add_argument("source", help="STORE_PATH@REV, ORG/NAME@REV or a run directory")
    p.add_argument("--stage", required=True)
    p.add_argument("--shards", help="comma-separated shard indices (default: all)")
    p.add_argument("--sample", type=int, help="this many shards, chosen at random (seeded)")
    p.add_argument("--engine", choices=sorted(ENGINES), help="must be the engine the stage was made with")
    p.add_argument("--scratch", type=Path, help="scratch directory (default: a new temporary one)")
    p.add_argument("--trust-remote-code", action="append", default=[], metavar="MODEL",
                   help="allow this model's own code to run (a manifest asking for it is not enough)")
    p.add_argument("--attest", action="store_true", help="record a verified reproduction in the store (own commit)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("status", help="stages, shards done/total and rows of a run directory (reads only)")
    p.add_argument("run_dir", type=Path)
    p = sub.add_parser("finalize", help="verify every shard of every stage and write the manifests (after a Slurm "
                       "array)")
    p.add_argument("run_dir", type=Path)
    p = sub.add_parser("tiny-model", help="build the tiny random Qwen2 test model (byte-identical per seed)")
    p.add_argument("dir", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("demo-model", help="convert PyPI's SmolLM2-135M-Instruct GGUF into a transformers folder")
    p.add_argument("dir", type=Path)
    sub.add_parser("presets", help="list the built-in presets")
    args = parser.parse_args(argv)
    handlers = {"run": cmd_run, "demo": cmd_demo, "publish": cmd_publish, "log": cmd_log, "load": cmd_load,
                "diff": cmd_diff, "regenerate": cmd_regenerate, "status": cmd_status, "finalize": cmd_finalize,
                "tiny-model": cmd_model,
                "demo-model": cmd_model, "presets": lambda a: print("\n".join(preset_names())) or 0}
    from .run import StageError
    from .store import StoreError

    try:
        return handlers[args.command](args)
    except (ConfigError, FileNotFoundError, StageError, StoreError) as exc:
        # Exit 2 for every error: `diff` uses 1 for "different", so scripts can tell the two apart.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed shards are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.command == "diff":
            print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
