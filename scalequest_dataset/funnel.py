"""The funnel of a run (what went into every stage, what it made and what it kept) and its cost (seconds and
tokens), read from the manifests.

Stages that fan out or in read by their units: `responses` takes questions and generates k responses each,
then keeps some of those; `default` takes responses and gives one per question. A percentage is always
out of what it names (kept of generated), never out of rows of another unit."""

from __future__ import annotations

from dataclasses import dataclass

from .run.records import Manifest
from .stages import STAGES


@dataclass
class FunnelRow:
    stage: str
    rows_in: int
    unit_in: str
    generated: int  # rows the stage produced before filtering (kept + dropped)
    rows_out: int
    unit_out: str
    dropped: dict[str, int]
    filters: bool  # the stage removes rows (it has a `dropped` split); else it maps (best of k)

    @property
    def kept(self) -> float | None:
        """The share of what the stage made that it kept (None for a stage that removes nothing)."""
        return self.rows_out / self.generated if self.filters and self.generated else None

    @property
    def fans_out(self) -> bool:
        """It made rows of another unit or number than it took in (responses: k per question), so what it made
        is shown apart, and `kept` is out of that."""
        return self.filters and (self.generated != self.rows_in or self.unit_in != self.unit_out)


def funnel(manifests: dict[str, Manifest]) -> list[FunnelRow]:
    rows = []
    for stage, m in manifests.items():
        cls = STAGES[stage]
        rows.append(FunnelRow(stage, m.counts.rows_in, cls.unit_in, m.counts.rows_out + m.counts.rows_dropped,
                              m.counts.rows_out, cls.unit_out, m.counts.dropped,
                              cls.dropped_features is not None))
    return rows


def _count(n: int, unit: str) -> str:
    return f"{n:,} {unit}{'' if n == 1 else 's'}"


def format_funnel(rows: list[FunnelRow]) -> str:
    """A table: in, made (fan-out stages), out, kept (% of made, or of in), drop reasons."""
    lines = [f"{'stage':<12} {'in':>16} {'made':>16} {'out':>16} {'kept':>5}  dropped"]
    for r in rows:
        made = _count(r.generated, r.unit_out) if r.fans_out else "-"
        kept = f"{100 * r.kept:.0f}%" if r.kept is not None else "-"
        drops = ", ".join(f"{k}: {v:,}" for k, v in r.dropped.items()) or "-"
        lines.append(f"{r.stage:<12} {_count(r.rows_in, r.unit_in):>16} {made:>16} {_count(r.rows_out, r.unit_out):>16} "
                     f"{kept:>5}  {drops}")
    return "\n".join(lines)


def format_cost(manifests: dict[str, Manifest]) -> str:
    """A table of what each stage cost (its manifest's execution): wall seconds, worker-seconds (the sum over
    workers of their busy time), GPU-seconds, tokens in (prompts) and out (completions)."""
    lines = [f"{'stage':<12} {'wall s':>9} {'worker s':>9} {'GPU s':>9} {'tokens in':>11} {'tokens out':>11}"]
    for stage, m in manifests.items():
        c = m.execution.cost
        lines.append(f"{stage:<12} {c.wall_seconds:>9.1f} {c.worker_seconds:>9.1f} {c.gpu_seconds:>9.1f} "
                     f"{m.tokens.prompt:>11,} {m.tokens.completion:>11,}")
    return "\n".join(lines)
