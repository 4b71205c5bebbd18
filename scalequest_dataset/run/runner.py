"""Running a config in a run directory: adopt the config (or refuse it, writing nothing), then per stage plan,
hand the pending shards to a backend, and finalize. It holds no rows and knows no paths: those are the
worker's and the layout's."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import console
from ..recipe.config import RunConfig
from ..recipe.params import ConfigError
from ..stages import STAGES
from .backends import Backend, Reporter, StageJob
from .backends.local import LocalBackend
from .finalize import StageState, finalize_stage, stage_state
from .layout import RunLayout
from .lock import RunLock
from .plan import StageError, adopt_config, load_config, plan_stage
from .records import Manifest, ShardRecord
from .worker import verified_record

if TYPE_CHECKING:
    from ..revisions.locator import Source


@dataclass(frozen=True)
class ShardSlice:
    """`--shard i/N`: this invocation runs the shards whose index is i modulo N (a Slurm array task)."""

    rank: int
    world: int

    @classmethod
    def parse(cls, text: str) -> ShardSlice:
        try:
            rank, world = (int(x) for x in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard expects i/N with integers, got {text!r}") from None
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"--shard {text}: need 0 <= i < N")
        return cls(rank, world)

    def owns(self, index: int) -> bool:
        return index % self.world == self.rank


class Runner:
    def __init__(self, run_dir: str | Path, config: RunConfig, backend: Backend | None = None,
                 show_progress: bool = True, say: Callable[[str], None] | None = None,
                 source: Source | None = None) -> None:
        """`source`: the version this run builds on (`run --from`): what is unchanged is taken from it."""
        self.layout = RunLayout(run_dir)
        self.source = source
        self.config = config
        self.backend = backend or LocalBackend()
        self.show_progress = show_progress
        self.say = say or console.err
        self._lock: RunLock | None = None

    def prepare(self, stages: list[str] | None = None, shard: ShardSlice | None = None) -> None:
        """Check the stage names, lock the run directory (see `lock`: refused, naming the holder, while another
        process runs in it) and make the config the run directory's (or refuse it, writing nothing). `run` does it
        first; a caller that wants the run directory to exist before the run (for its log) calls it. The lock is
        held until `run` returns."""
        names = stages or self.config.stage_names()
        for name in names:
            self.config.input_of(name)  # unknown stage names fail before anything is written
        if self._lock is None:
            slice_name = f"{shard.rank}-of-{shard.world}" if shard else None
            what = f"`run` of {', '.join(names)}" + (f" (slice {shard.rank}/{shard.world})" if shard else "")
            self._lock = RunLock(self.layout, what, slice_name).acquire(self.say)
        try:
            for note in adopt_config(self.layout, self.config):
                self.say(note)
            self._lock.announce()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Unlock the run directory (`run` does it when it returns)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def run(self, stages: list[str] | None = None, shard: ShardSlice | None = None, plan_only: bool = False
            ) -> dict[str, Manifest | None]:
        """Run (or resume) the stages, in order. With `shard`, only that slice of each stage runs, and a stage
        another slice has not finished stops the run (the Slurm array's next job goes on from there). With
        `plan_only`, the stages are planned (models pinned, shards cut, whole-input passes done) and not run."""
        names = stages or self.config.stage_names()
        if self._lock is None:
            self.prepare(names, shard)
        try:
            return self._run(names, shard, plan_only)
        finally:
            self.release()

    def _run(self, names: list[str], shard: ShardSlice | None, plan_only: bool) -> dict[str, Manifest | None]:
        saved = load_config(self.layout)  # what the manifests record (the run directory's config)
        done: dict[str, Manifest | None] = {}
        for name in names:
            plan = plan_stage(self.layout, self.config, name, processes=self.backend.planning_processes())
            if self.source is not None and not plan_only:
                from .derive import stage_from_source

                staged = stage_from_source(self.layout, self.config, plan, self.source)
                if staged.reuse.reason:
                    self.say(f"{name}: nothing taken from {self.source.label}: {staged.reuse.reason}")
            if plan_only:
                self.say(f"{name}: planned, {len(plan.shards)} shard(s), fingerprint {plan.fingerprint}")
                continue
            pending = [s for s in plan.shards if (shard is None or shard.owns(s.index))
                       and verified_record(self.layout, plan, s.index) is None]
            if pending:
                progress = Progress(name, sum(s.rows for s in pending), self.show_progress,
                                    STAGES[name].progress_tokens)
                try:
                    self.backend.run(StageJob(str(self.layout.root), name, [s.index for s in pending], self.config),
                                     Reporter(progress.update, progress.shard_done))
                finally:
                    progress.close()
            manifest = finalize_stage(self.layout, saved, name)
            done[name] = manifest
            if manifest is None:
                state = stage_state(self.layout, name)
                if shard is not None:
                    self.say(f"{name}: slice {shard.rank}/{shard.world} done; shards {_ranges(state.missing)} belong "
                             "to other slices (then `scalequest finalize` writes the manifest)")
                    break
                raise StageError(f"stage {name!r}: shards {_ranges(state.missing)} are not complete after the run")
        return done

    def status(self) -> list[StageState]:
        return status(self.layout)


def status(layout: RunLayout) -> list[StageState]:
    """Every stage of the run directory's config: shards done of planned, rows, complete. Reads only."""
    config = load_config(layout)
    return [stage_state(layout, name) for name in config.stage_names()]


def finalize(run_dir: str | Path) -> list[StageState]:
    """Verify every shard of every planned stage and write the manifests of the complete ones (`scalequest
    finalize`, after a Slurm array). Stages not planned yet are skipped; the result says what is missing. Refused
    (naming the holder) while a run or a slice still runs in the directory."""
    layout = RunLayout(run_dir).require()
    config = load_config(layout)
    lock = RunLock(layout, "`finalize`").acquire(console.err)
    lock.announce()
    try:
        for name in config.stage_names():
            finalize_stage(layout, config, name)
    finally:
        lock.release()
    return status(layout)


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> "0-2, 5, 7-8"."""
    parts, start = [], None
    for i, x in enumerate(indices):
        if start is None:
            start = x
        if i + 1 == len(indices) or indices[i + 1] != x + 1:
            parts.append(str(start) if start == x else f"{start}-{x}")
            start = None
    return ", ".join(parts) or "none"


class Progress:
    """One bar per stage: rows, tokens/s and ETA (tqdm, on the terminal even while engine output goes to the log:
    see `console`). The tokens are what the stage's engine generated, or read where it scores
    (`Stage.progress_tokens`); a stage without an engine shows none. Workers report rows as they go; a backend
    that reports only finished shards moves the bar a shard at a time. Until the first rows come (models
    loading), the bar says so."""

    def __init__(self, name: str, total_rows: int, enabled: bool = True, tokens: str = "generated") -> None:
        from tqdm.auto import tqdm

        self.started = time.perf_counter()
        self.kind = tokens  # "generated" or "read"
        self.rows = self.tokens = 0  # reported as they go
        self.done_rows = self.done_tokens = 0  # of finished shards
        self.bar = tqdm(total=total_rows, desc=f"{name:<12}", unit="row", disable=not enabled, dynamic_ncols=True,
                        file=console.stream(), postfix="starting")

    def update(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        self._refresh()

    def shard_done(self, record: ShardRecord) -> None:
        self.done_rows += record.rows_in
        self.done_tokens += record.tokens.completion if self.kind == "generated" else record.tokens.prompt
        self._refresh()

    def postfix(self) -> str:
        tokens = max(self.tokens, self.done_tokens)
        if not tokens:
            return ""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        return f"{tokens / elapsed:,.0f} {self.kind} tok/s"

    def _refresh(self) -> None:
        shown = max(self.rows, self.done_rows)
        self.bar.set_postfix_str(self.postfix(), refresh=False)
        self.bar.update(shown - self.bar.n)

    def close(self) -> None:
        self.bar.close()
