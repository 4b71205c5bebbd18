"""A stage's whole-input pass at plan time (dedup's text index, decontamination's overlap scan), on several
processes where the backend has workers: the input's files cut into contiguous parts of about equal rows, each
part's pass (`Stage.prepare_part`) in its own process, the parts merged in input order (`Stage.prepare_merge`).
Each stage's merge is independent of how the input was cut (minimums, sums, matches sorted by id), so the
prepared table is byte for byte the one pass over everything (tests/run/test_prepare.py).

Processes, not threads: both passes are Python loops (normalising and hashing text, matching n-grams) that hold
the interpreter. They are spawned, not forked: the planner may hold Arrow's and the engines' threads."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..recipe.config import RunConfig
from ..stages import STAGES, Stage
from .files import iter_batches
from .urlpath import UrlPath

# Below this many input rows per process, a process's start (an interpreter and its imports, ~2 CPU-s) costs more
# than its share of the pass saves (dedup ~0.02 ms a row, decontamination ~0.1 ms: BENCHMARKS.md, issue 22).
MIN_ROWS_PER_PROCESS = 50_000


def has_pass(stage: Stage) -> bool:
    return type(stage).prepare_part is not Stage.prepare_part


def prepare_input(stage: Stage, paths: list[Path | UrlPath], rows: list[int], processes: int
                  ) -> tuple[pa.Table | None, float]:
    """The stage's prepared table over these input files (`rows` each), and the CPU seconds its other processes
    spent (the caller's own are in its process time)."""
    parts = min(processes, len(paths), max(1, sum(rows) // MIN_ROWS_PER_PROCESS))
    if parts <= 1 or not has_pass(stage):
        return stage.prepare(batches(stage, paths)), 0.0
    jobs = [(stage.name, stage.config, stage.models(), group) for group in contiguous(paths, rows, parts)]
    with ProcessPoolExecutor(parts, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(_part, jobs))
    table = stage.prepare_merge([part for part, _ in done])
    if table is not None:
        stage.load_prepared(table)
    return table, sum(cpu for _, cpu in done)


def batches(stage: Stage, paths: list[Path | UrlPath]) -> Iterator[pa.RecordBatch]:
    """The input's rows, only the columns the stage reads (all where it names none)."""
    return iter_batches(paths, list(stage.reads) or None)


def contiguous(paths: list[Any], rows: list[int], parts: int) -> list[list[Any]]:
    """The files in order, cut into `parts` non-empty runs of about equal rows."""
    total, out, current, seen = sum(rows), [], [], 0
    for i, (path, n) in enumerate(zip(paths, rows, strict=True)):
        current.append(path)
        seen += n
        left_files, left_parts = len(paths) - i - 1, parts - len(out) - 1
        if left_parts and (seen >= total * (len(out) + 1) / parts or left_files == left_parts):
            out.append(current)
            current = []
    out.append(current)
    return [group for group in out if group]


def _part(job: tuple[str, RunConfig, dict[str, Any], list[Path | UrlPath]]) -> tuple[Any, float]:
    name, config, models, paths = job
    started = time.process_time()
    stage = STAGES[name](config, models)
    return stage.prepare_part(batches(stage, paths)), time.process_time() - started
