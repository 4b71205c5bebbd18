"""`scalequest run | status | finalize | demo | publish | log | load | diff | regenerate | doctor | tiny-model |
demo-model | presets`."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import __version__, console

# Only what every command needs: names for the argument parser. A command imports its own modules (the stages
# pull in `datasets` and pandas, ~1 s), so `--version`, `log` or `status` start in a fraction of that.
from .engines import ENGINES
from .recipe import preset_names
from .run import backends

OK, DIFFERENT, USAGE, FAILURE, INTERRUPTED = 0, 1, 2, 3, 130  # EPILOG says what each means

EPILOG = """\
exit codes (every command):
  0    success; diff: the same data; regenerate: every shard reproduces; doctor: the essentials work
  1    diff: the versions differ; regenerate: a shard does not reproduce
  2    usage, input or environment error, in one line naming the thing and the fix: an unknown stage or preset,
       a bad --set value, a missing model, not a run directory or store, the Hub unreachable, no token, no
       space left on a device
  3    unexpected failure: one line, and the log that holds the traceback (-v prints it here)
  130  interrupted (Ctrl-C): completed shards are kept; the same command resumes

Engine and library output (vLLM, transformers, C libraries' warnings) goes to a log, not the terminal:
RUN/logs/scalequest.log for run and demo, SCRATCH/logs/scalequest.log for regenerate, else
$SCALEQUEST_CACHE/logs/COMMAND.log. -v shows it here too."""


# ---------------------------------------------------------------------------------------------- arguments


def _local_folder(option: str) -> Callable[[str], Path]:
    """An argparse type for a folder that must be on this machine (scratch space, the demo's run and store): a URL
    is refused here, naming the option, rather than folded into a local folder named after its scheme ('s3:')."""
    def parse(text: str) -> Path:
        if "://" in text and not text.startswith("file://"):
            raise argparse.ArgumentTypeError(f"{option} must be a local folder, not a URL ({text})")
        return Path(text.removeprefix("file://"))
    return parse


def _common() -> argparse.ArgumentParser:
    """Options every subcommand takes (also before the subcommand: `scalequest -v run ...`)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="show engine and library output here too, and tracebacks")
    p.add_argument("--no-progress", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    return p


def _add_run(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common],
                       help="run (or resume) the pipeline for a preset into a run directory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", default=None, help=f"built-in preset ({', '.join(preset_names())}) or a YAML path")
    src.add_argument("--config", default=None, help="a resolved config file (e.g. RUN/config.yaml)")
    src.add_argument("--from", dest="from_source", default=None, metavar="SOURCE",
                     help="build on a version (STORE@REV, ORG/NAME@REV or a run directory): its config, changed by "
                     "--set; what is unchanged is taken from it")
    p.add_argument("--out", required=True, help="run directory (created; resumed if it exists): a path or a URL "
                   "such as s3://bucket/run (any fsspec filesystem)")
    p.add_argument("--stage", action="append", help="run only this stage (repeatable); default: all, in order")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set seed=7 --set stages.responses.samples=3")
    p.add_argument("--engine", choices=sorted(ENGINES), help="override engine.name")
    backends.add_arguments(p)  # --backend, --workers, --gpus-per-worker and each backend's own options
    p.add_argument("--shard", help="run only slice i/N of each stage's shards (a Slurm array task)")
    p.add_argument("--plan-only", action="store_true", help="plan the stages (pin models, cut shards) and stop")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="scalequest", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"scalequest {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show engine and library output here too, "
                        "and tracebacks")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub, common)
    p = sub.add_parser("demo", parents=[common],
                       help="run the demo preset end to end and print the funnel (README command 1)")
    p.add_argument("--preset", default="demo")
    p.add_argument("--out", type=_local_folder("--out"), default=Path("runs/demo"))
    p.add_argument("--store", type=_local_folder("--store"), help="local store to publish to (default: OUT-store)")
    p.add_argument("--tag-prefix", default="v1")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p = sub.add_parser("publish", parents=[common],
                       help="publish a run's complete stages: one commit and one tag per stage")
    p.add_argument("run_dir", help="a run directory (a path or a URL)")
    p.add_argument("--to", required=True, help="a local store path (a git repository, created on first use) "
                   "or hf://datasets/ORG/NAME")
    p.add_argument("--stage", action="append", help="publish only this stage (repeatable)")
    p.add_argument("--all", action="store_true", help="every complete stage, in order (the default)")
    p.add_argument("--tag-prefix", default="v1", help="tags are PREFIX-STAGE, and PREFIX for the final stage")
    p.add_argument("--force", action="store_true", help="move a tag that exists with other content")
    p = sub.add_parser("log", parents=[common], help="revisions of a store: tags, stages, rows, fingerprints")
    p.add_argument("target")
    p = sub.add_parser("load", parents=[common], help="load a stage at a revision and print the first rows")
    p.add_argument("source", help="a store path, a Hub repo id ORG/NAME, or a run directory")
    p.add_argument("stage", nargs="?", default="default")
    p.add_argument("--revision")
    p.add_argument("--split", default="train")
    p.add_argument("--head", type=int, default=3)
    p = sub.add_parser("diff", parents=[common],
                       help="what changed between two versions, and why (exit 0 identical, 1 different)")
    p.add_argument("a", help="RUN_DIR, STORE_PATH@REV or ORG/NAME@REV")
    p.add_argument("b")
    p.add_argument("--stage")
    p.add_argument("--format", choices=["text", "json", "markdown", "html"], default="text")
    p.add_argument("--sample", type=int, default=5, help="changed rows to show")
    p.add_argument("--output", "-o", help="write the report to this file")
    p.add_argument("--no-verify", action="store_true", help="trust the manifests: do not check the files' bytes")
    p = sub.add_parser("regenerate", parents=[common],
                       help="rebuild shards of a published stage and compare their sha256 (exit 1: a mismatch)")
    p.add_argument("source", help="STORE_PATH@REV, ORG/NAME@REV or a run directory")
    p.add_argument("--stage", required=True)
    p.add_argument("--shards", help="comma-separated shard indices (default: all)")
    p.add_argument("--sample", type=int, help="this many shards, chosen at random (seeded)")
    p.add_argument("--engine", choices=sorted(ENGINES), help="must be the engine the stage was made with")
    p.add_argument("--scratch", type=_local_folder("--scratch"),
                   help="local scratch directory (default: a new temporary one)")
    p.add_argument("--trust-remote-code", action="append", default=[], metavar="MODEL",
                   help="allow this model's own code to run (a manifest asking for it is not enough)")
    p.add_argument("--attest", action="store_true", help="record a verified reproduction in the store (own commit)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("status", parents=[common],
                       help="stages, shards done/total and rows of a run directory (reads only)")
    p.add_argument("run_dir", help="a run directory (a path or a URL)")
    p = sub.add_parser("finalize", parents=[common],
                       help="verify every shard of every stage and write the manifests (after a Slurm array)")
    p.add_argument("run_dir", help="a run directory (a path or a URL)")
    sub.add_parser("doctor", parents=[common], help="check this machine: engines, devices, caches, the Hub, a token")
    p = sub.add_parser("preflight", parents=[common],
                       help="before spending GPU-hours: vLLM, GPUs vs workers x tensor parallelism, each model's "
                       "weights vs GPU memory and disk, tokens, trust_remote_code (exit 2: the first thing to fix)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", help="a built-in preset (default: demo)")
    src.add_argument("--config", help="a resolved config file (e.g. RUN/config.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--engine", choices=sorted(ENGINES), help="override engine.name")
    p.add_argument("--workers", type=int, default=1, help="worker processes (or actors), one engine each")
    p.add_argument("--gpus-per-worker", type=int, default=1, help="GPUs per worker (tensor parallelism)")
    p = sub.add_parser("tiny-model", parents=[common],
                       help="build the tiny random Qwen2 test model (byte-identical per seed)")
    p.add_argument("dir", type=_local_folder("dir"))
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("demo-model", parents=[common],
                       help="convert PyPI's SmolLM2-135M-Instruct GGUF into a transformers folder")
    p.add_argument("dir", type=_local_folder("dir"))
    p = sub.add_parser("presets", parents=[common], help="list the built-in presets, or the stages of one")
    p.add_argument("name", nargs="?", help="print this preset's stages, one per line (after --set overrides)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


# ---------------------------------------------------------------------------------------------- commands


@contextmanager
def logged(args: argparse.Namespace, log: Path) -> Iterator[None]:
    """The command's engine and library output to `log` (and to the terminal with -v); a store's transfers as a
    progress bar."""
    with console.capture(log, verbose=args.verbose, title=f"scalequest {' '.join(args.argv)}"):
        with console.TransferBar(args.command, enabled=not args.no_progress) as bar:
            from .revisions.stores.base import reporting_transfers

            with reporting_transfers(bar):
                yield


def cmd_run(args: argparse.Namespace) -> int:
    from .recipe.config import ConfigError, resolve_config
    from .run import Runner, ShardSlice

    origin = None
    if args.from_source:
        from .revisions.locator import open_source
        from .run.derive import source_config

        origin = open_source(args.from_source)
        config = source_config(origin, args.overrides, args.engine)
    else:
        config = resolve_config(args.config or args.preset or "demo", args.overrides, args.engine)
    shard = ShardSlice.parse(args.shard) if args.shard else None
    if shard is not None and (args.workers != 1 or args.backend != backends.DEFAULT):
        raise ConfigError("--shard i/N runs one slice in this process: leave out --workers and --backend")
    # Made before the run directory: a backend checks its options when made and starts nothing (its workers, or a
    # Ray cluster whose output belongs in the log, start at its first stage, inside `logged`).
    backend = backends.from_args(args)
    runner = Runner(args.out, config, show_progress=not args.no_progress, source=origin)
    runner.prepare(args.stage, shard)  # the run directory exists (and is locked) from here on (or nothing was written): it holds the log
    stages = args.stage or config.stage_names()
    try:
        _say_setup(args.out, f"preset {config.preset}, seed {config.seed}, engine {config.engine.name}, "
                   f"{len(stages)} stage{'s' * (len(stages) != 1)}"
                   + (f", built on {origin.label}" if origin is not None else ""))
        with logged(args, console.run_log(args.out)):
            with backend:
                runner.backend = backend
                runner.run(args.stage or None, shard, args.plan_only)
    finally:
        runner.release()  # (`run` releases it; a backend that failed to start must too)
    _print_results(args.out, stages)
    _print_where(args.out)
    return OK


def _say_setup(run_dir: str | Path, what: str) -> None:
    console.err(f"run directory {run_dir} ({what})")
    console.err(f"engine and library output: {console.run_log(run_dir)} (-v shows it here)")


def _print_results(run_dir: str | Path, stages: list[str]) -> None:
    """From the manifests of the run's complete stages, read once: their funnel, the status table when some stage
    is not complete, and what this invocation's `stages` cost."""
    from .run import RunLayout, load_config
    from .run.funnel import format_cost, format_funnel, funnel
    from .run.plan import read_manifest

    layout = RunLayout(run_dir)
    names = load_config(layout).stage_names()
    manifests = {s: read_manifest(layout, s) for s in layout.complete_stages(names)}
    if manifests:
        console.out("\nfunnel:")
        console.out(format_funnel(funnel(manifests)))  # type: ignore[arg-type]
    if len(manifests) < len(names):
        console.out("")
        _print_status(run_dir)
    cost = {s: manifests[s] for s in stages if s in manifests}
    if cost:
        console.out("\ncost:")
        console.out(format_cost(cost))  # type: ignore[arg-type]


def _print_where(run_dir: str | Path) -> None:
    from .run.urlpath import as_path

    root = as_path(run_dir).resolve()
    console.out(f"\nrun directory: {root}  (data/<stage>/*.parquet, manifests/<stage>.json)")
    console.out(f"log:           {console.run_log(root)}")


def cmd_finalize(args: argparse.Namespace) -> int:
    # not `from .run`: once imported, its submodule `finalize` shadows the function of that name there
    from .run.runner import finalize

    states = finalize(args.run_dir)
    _print_status(args.run_dir)
    missing = [s for s in states if s.shards is not None and not s.complete]
    if missing:
        from .run.runner import _ranges

        for s in missing:
            console.err(f"error: stage {s.stage!r}: shards {_ranges(s.missing)} are not complete; run them "
                        f"(`scalequest run --config {args.run_dir}/config.yaml --out {args.run_dir} --stage "
                        f"{s.stage} --shard i/N`), then finalize again")
        return USAGE
    return OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Every stage of the `demo` preset, each published as a revision of a local store; then the funnel,
    one stage loaded back from its tag, and where things are."""
    from .recipe.config import resolve_config
    from .revisions.load import load_dataset
    from .revisions.publish import publish
    from .run import Runner
    from .run.backends.local import LocalBackend

    config = resolve_config(args.preset, args.overrides)
    runner = Runner(args.out, config, show_progress=not args.no_progress)
    runner.prepare()
    stages = config.stage_names()
    store = args.store or args.out.with_name(args.out.name + "-store")
    _say_setup(args.out, f"preset {config.preset}, seed {config.seed}, engine {config.engine.name}, every stage")
    with logged(args, console.run_log(args.out)):
        with LocalBackend() as backend:
            runner.backend = backend
            runner.run()
        console.out(f"\npublished to {store}:")
        results = publish(args.out, store, stages, args.tag_prefix)
        for r in results:
            console.out("  " + r.describe())
        _print_results(args.out, stages)
        last, tag = stages[-1], args.tag_prefix
        ds = load_dataset(store, last, revision=tag)
    console.out(f"\nloaded back: scalequest_dataset.load_dataset({str(store)!r}, {last!r}, revision={tag!r})")
    console.out(f"  {ds.num_rows} rows, columns {ds.column_names}")
    if ds.num_rows:
        row = ds[0]
        console.out(f"  first row {row['id']}:")
        for column in ("query", "response"):
            if row.get(column):
                console.out(f"    {column}: {row[column][:400]!r}")
    _print_where(args.out)
    console.out(f"store:         {Path(store).resolve()}  (`scalequest log {store}`, `git clone {store}`)")
    from .recipe.models import cache_dir

    console.out(f"models:        {cache_dir() / 'models'}")
    return OK


def cmd_publish(args: argparse.Namespace) -> int:
    from .revisions.publish import publish

    if args.all and args.stage:
        from .recipe.params import ConfigError

        raise ConfigError("use either --stage or --all")
    with logged(args, console.command_log("publish")):
        publish(args.run_dir, args.to, args.stage or None, args.tag_prefix, args.force, say=console.out)
    console.out(f"store: {args.to}")
    return OK


def cmd_log(args: argparse.Namespace) -> int:
    from .revisions.publish import log

    with logged(args, console.command_log("log")):
        rows = log(args.target)
    if not rows:
        console.out(f"{args.target}: no tags yet")
        return OK
    console.out(f"{'tag':<24} {'commit':<12} {'stage':<12} {'rows':>9}  fingerprint")
    for r in rows:
        rows_text = f"{r['rows']:>9}" if r["rows"] is not None else f"{'-':>9}"
        console.out(f"{r['tag']:<24} {r['commit'][:12]:<12} {r['stage']:<12} {rows_text}  {r['fingerprint'] or '-'}")
    return OK


def cmd_load(args: argparse.Namespace) -> int:
    from .revisions.load import load_dataset

    with logged(args, console.command_log("load")):
        ds = load_dataset(args.source, args.stage, revision=args.revision, split=args.split)
        head = ds.select(range(min(args.head, ds.num_rows))).to_list()
    console.out(str(ds))
    for row in head:
        console.out(str({k: (v[:120] + "..." if isinstance(v, str) and len(v) > 120 else v) for k, v in row.items()}))
    return OK


def _arrow_pool_for_scans() -> None:
    """Arrow's jemalloc pool for a command that decodes gigabytes of text shard after shard (diff): the default,
    mimalloc, hands each shard's freed buffers back to the kernel, which zeroes every page again as the next
    shard's grow (a 1M-row diff: ~17 % less CPU with jemalloc, BENCHMARKS.md). Arrow reads the variable when it
    starts, so only before pyarrow is imported; a pool the user chose is kept. Values do not depend on the pool.
    Linux only: where it was measured, and pyarrow's Windows wheels have no jemalloc."""
    if sys.platform.startswith("linux") and "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")


def cmd_diff(args: argparse.Namespace) -> int:
    _arrow_pool_for_scans()
    from .diffing.compare import diff
    from .diffing.report import render

    with logged(args, console.command_log("diff")):
        report = diff(args.a, args.b, stage=args.stage, sample=args.sample, verify=not args.no_verify)
        text = render(report, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        console.out(f"wrote {args.output}")
    else:
        console.out(text)
    return OK if report.identical else DIFFERENT


def cmd_regenerate(args: argparse.Namespace) -> int:
    import json

    from .revisions.regenerate import regenerate

    shards = [int(x) for x in args.shards.split(",")] if args.shards else None
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix=f"regenerate-{args.stage}-"))
    console.err(f"scratch directory {scratch}; engine and library output: {console.run_log(scratch)}")
    with logged(args, console.run_log(scratch)):
        report = regenerate(args.source, args.stage, shards=shards, sample=args.sample, engine=args.engine,
                            scratch=scratch, trust_remote_code=args.trust_remote_code, attest=args.attest)
    console.out(json.dumps(report.to_dict(), indent=2, default=str) if args.json else report.describe())
    return OK if report.all_match else DIFFERENT


def cmd_status(args: argparse.Namespace) -> int:
    _print_status(args.run_dir)
    return OK


def _print_status(run_dir: str | Path) -> None:
    """Stages, shards done of planned, rows, and state. Reads only."""
    from .run import RunLayout, load_config, status

    layout = RunLayout(run_dir).require()
    config = load_config(layout)
    console.out(f"run: {layout.root}  (preset {config.preset}, seed {config.seed})")
    console.out(f"{'stage':<12} {'shards':>11} {'rows':>9}  state")
    for s in status(layout):
        shards = f"{len(s.done)}/{s.shards}" if s.shards is not None else "-"
        state = "complete" if s.complete else ("partial" if s.done else "not started")
        console.out(f"{s.stage:<12} {shards:>11} {s.rows:>9}  {state}")


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import doctor

    with logged(args, console.command_log("doctor")):
        ok = doctor(console.out)
    return OK if ok else USAGE


def cmd_preflight(args: argparse.Namespace) -> int:
    from .recipe.config import ConfigError, resolve_config
    from .run.backends.base import check_workers
    from .run.preflight import preflight

    check_workers(args.workers, args.gpus_per_worker)
    config = resolve_config(args.config or args.preset or "demo", args.overrides, args.engine)
    with logged(args, console.command_log("preflight")):
        problem = preflight(config, args.workers, args.gpus_per_worker, console.out)
    if problem:
        raise ConfigError(problem)
    return OK


def cmd_presets(args: argparse.Namespace) -> int:
    from .recipe.config import resolve_config

    names = resolve_config(args.name, args.overrides).stage_names() if args.name else preset_names()
    console.out("\n".join(names))
    return OK


def cmd_model(args: argparse.Namespace) -> int:
    from .recipe.models import build_tiny_model, convert_demo_model

    with logged(args, console.command_log(args.command)):
        if args.command == "tiny-model":
            build_tiny_model(args.dir, seed=args.seed)
        else:
            convert_demo_model(args.dir)
    console.out(f"wrote {args.dir}")
    return OK


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "demo": cmd_demo, "publish": cmd_publish, "log": cmd_log, "load": cmd_load, "diff": cmd_diff,
    "regenerate": cmd_regenerate, "status": cmd_status, "finalize": cmd_finalize, "doctor": cmd_doctor,
    "preflight": cmd_preflight,
    "tiny-model": cmd_model, "demo-model": cmd_model, "presets": cmd_presets,
}


# ---------------------------------------------------------------------------------------------- errors


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    console.forget_last_log()
    try:
        return HANDLERS[args.command](args)
    except KeyboardInterrupt:
        console.err("interrupted: completed shards are kept; run the same command again to resume")
        return INTERRUPTED
    except Exception as exc:  # every failure ends in one line and a distinct exit code
        code, message = explain(exc, args)
        log = console.last_log()
        if code == FAILURE:
            where = f"the traceback is in {log}; -v prints it here" if log else "traceback below"
            console.err(f"error: {message} (an unexpected failure: {where})")
        else:
            console.err(f"error: {message}")
        if args.verbose or (code == FAILURE and not log):
            traceback.print_exception(exc, file=sys.stderr)
        return code


# ---------------------------------------------------------------------------------------------- one-line errors
# What the CLI says when a command fails: one line naming the thing and the fix, and a distinct exit code.
#
# 2 is for what the user can fix (usage, input, environment): our own errors (a config field, a stage, a store, a
# file) and the common mistakes that reach us as library exceptions - the Hub unreachable, no or a refused token,
# a dataset that is not on the Hub, no space left on a device (ENOSPC, wherever it is raised, even as text in a
# worker's report). 3 is for everything else: a bug or a condition nobody foresaw, reported with the log that
# holds the traceback.

_NO_SPACE = re.compile(r"No space left on device(?::\s*'([^']+)')?")
_UNREACHABLE = {"ConnectError", "ConnectTimeout", "TransportError", "ConnectionError", "OfflineModeIsEnabled",
                "Timeout", "ReadTimeout", "NameResolutionError", "MaxRetryError"}


def explain(exc: BaseException, args: argparse.Namespace | None = None) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that ended a command."""
    from .recipe.params import ConfigError
    from .revisions.stores import StoreError
    from .revisions.stores.base import PartialPublish
    from .run.plan import ShardFailed, StageError

    if isinstance(exc, PartialPublish) and exc.__cause__ is not None:  # the cause's exit code, the whole story
        return explain(exc.__cause__, args)[0], str(exc)
    if (space := _no_space(exc)) is not None:
        return USAGE, no_space_message(space, args)
    if isinstance(exc, ShardFailed):
        return FAILURE, str(exc)
    if isinstance(exc, (ConfigError, StoreError, StageError)):
        return USAGE, str(exc)
    if isinstance(exc, FileNotFoundError):
        return USAGE, str(exc) if not exc.filename else f"{exc.filename}: no such file or directory"
    if isinstance(exc, PermissionError):
        return USAGE, f"{exc.filename or exc}: permission denied (choose a place you can write, or fix its mode)"
    for e in _chain(exc):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            return USAGE, (f"the Hub refused the request ({status}): no valid token for this repository; set "
                           "HF_TOKEN or run `hf auth login` (a token needs write access to publish)")
        if _names(e) & {"DatasetNotFoundError", "RepositoryNotFoundError"}:
            return USAGE, f"{e} (check the name, and that your token can see it)"
        if _names(e) & _UNREACHABLE and not isinstance(e, BrokenPipeError):
            return USAGE, (f"the Hub at {_endpoint()} is unreachable ({type(e).__name__}); check the network or "
                           "proxy, or work offline (HF_HUB_OFFLINE=1) with run directories and local stores")
    return FAILURE, f"{type(exc).__name__}: {exc}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (raise ... from, and the one being handled when it was raised)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _no_space(exc: BaseException) -> str | None:
    """The path a write ran out of space on ("" when unknown), or None when this is not ENOSPC."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return str(e.filename or "")
        if (found := _NO_SPACE.search(str(e))) is not None:  # pyarrow, or a worker's report as text
            return found.group(1) or ""
    return None


def no_space_message(path: str, args: argparse.Namespace | None) -> str:
    """Which device is full, how much it has free and how much the command needs (where known), and how to go
    on: what was written before is kept (shards and files are written atomically)."""
    where = Path(path) if path else _command_path(args)
    free = console.free_space(where)
    needed = _needed(args)
    need = f"; it needs about {console.human_size(needed)}" if needed else ""
    return (f"no space left on the device holding {where} ({free}{need}): free some space or move {_knob(where, args)}"
            f" elsewhere, then run the same command again (what was already written is kept)")


def _command_path(args: argparse.Namespace | None) -> Path:
    for name in ("out", "scratch", "to", "run_dir", "dir"):
        value = getattr(args, name, None)
        if value and not str(value).startswith("hf://"):
            return Path(value)
    from .recipe.models import cache_dir

    return cache_dir()


def _needed(args: argparse.Namespace | None) -> int | None:
    """What `publish` writes at most (the stages' files): the one command whose need is known up front."""
    if args is None or getattr(args, "command", None) != "publish":
        return None
    try:
        from .run import RunLayout
        from .run.plan import read_manifest
        from .stages import STAGE_ORDER

        layout = RunLayout(args.run_dir)
        stages = args.stage or layout.complete_stages(STAGE_ORDER)
        return sum(f.bytes for s in stages if (m := read_manifest(layout, s)) for f in m.files().values())
    except Exception:  # an estimate must never hide the real message
        return None


def _knob(path: Path, args: argparse.Namespace | None) -> str:
    """The setting that moves `path`: the command's own option (--out, --to, --scratch) when the path is under it,
    else the cache, Hugging Face's home or the temporary directory."""
    from .recipe.models import cache_dir

    resolved = console.existing_parent(path)
    options = (("out", "--out"), ("to", "--to"), ("scratch", "--scratch"), ("run_dir", "the run directory"),
               ("dir", "the target folder"))
    roots = [(Path(value), knob) for name, knob in options
             if (value := getattr(args, name, None)) and not str(value).startswith("hf://")]
    roots += [(cache_dir(), "the cache (SCALEQUEST_CACHE)"),
              (Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")), "HF_HOME"),
              (Path(tempfile.gettempdir()), "TMPDIR")]
    for root, knob in roots:
        base = console.existing_parent(root)
        if base != Path("/") and resolved.is_relative_to(base):
            return knob
    return "it"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
