"""Helpers for tests that run the `tiny` preset: a run on the in-process backend with a shared engine pool,
and the files of a run directory as bytes (what "byte-identical" compares)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from scalequest_dataset.engines import EnginePool
from scalequest_dataset.recipe.config import resolve_config
from scalequest_dataset.run import RunLayout, Runner
from scalequest_dataset.run.backends.local import LocalBackend

CLI = [sys.executable, "-m", "scalequest_dataset.cli"]


def tiny_run(root: Path, pool: EnginePool, *overrides: str, stages: list[str] | None = None) -> RunLayout:
    """The `tiny` preset (with `--set` overrides) run into `root` in this process."""
    with LocalBackend(pool=pool) as backend:
        Runner(root, resolve_config("tiny", list(overrides)), backend, show_progress=False, say=lambda _: None
               ).run(stages)
    return RunLayout(root)


def data_files(root: Path) -> dict[str, bytes]:
    """Every Parquet shard of a run, by path relative to the run directory."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((Path(root) / "data").rglob("*.parquet"))}


def every_file(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a run directory with its bytes and mtime: what "changes nothing" compares (not its locks,
    which say who runs in it now: every run takes them)."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(Path(root).rglob("*")) if p.is_file() and ".cache" not in p.parts
            and not (p.parent.name == "state" and p.name.startswith("lock"))}


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout first on the path, then tests/ (a test file run as a
    client script imports `support` as the tests do)."""
    root = Path(__file__).resolve().parents[2]
    path = [str(root), str(root / "tests"), os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, path)), **extra}
