"""`scalequest diff A B`: what changed between two versions of the dataset, and why.

Per stage and per split (`train`, and `dropped` for filter stages): shards compared by sha256 from the
manifests (a file whose content the other side also has is never read), then the rows of the others
matched by id and compared exactly, whatever their Arrow types (`rowdiff`: added, removed, changed per
column, samples with a text diff, and the schema: columns added, removed, retyped), distributions over
the shards read (`diffstats`) and drop reasons, and the why: every config and manifest field that
differs. Rendered as text, markdown, json or a self-contained html page (`diffreport`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .config import STAGE_ORDER
from .rowdiff import compare_shards
from .sources import Source, open_source

WHY_IGNORED = ("cost", "shards", "counts", "environment.platform")
SPLITS = ("train", "dropped")
SAME_DATA = ("identical", "files-only")  # statuses that mean the same rows and types


@dataclass
class SplitDiff:
    split: str
    status: str  # identical | changed | files-only (same rows, other files) | added | removed
    shards_total: tuple[int, int] = (0, 0)
    shards_changed: list[str] = field(default_factory=list)
    rows_total: tuple[int, int] = (0, 0)  # the split's rows on each side, from the manifests
    schema: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    file_causes: list[str] = field(default_factory=list)


@dataclass
class StageDiff:
    stage: str
    status: str  # identical | changed | files-only | added | removed
    splits: dict[str, SplitDiff] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    why: list[dict[str, Any]] = field(default_factory=list)

    # The `train` split's findings, the ones most readers want first.
    @property
    def rows(self) -> dict[str, Any]:
        return self._train().rows

    @property
    def schema(self) -> dict[str, Any]:
        return self._train().schema

    @property
    def stats(self) -> dict[str, Any]:
        return self._train().stats

    @property
    def shards_changed(self) -> list[str]:
        return self._train().shards_changed

    @property
    def shards_total(self) -> tuple[int, int]:
        return self._train().shards_total

    def _train(self) -> SplitDiff:
        return self.splits.get("train") or SplitDiff("train", self.status)


@dataclass
class DiffReport:
    a: str
    b: str
    stages: list[StageDiff]

    @property
    def identical(self) -> bool:
        """The same data: every stage has the same rows and types (its files may still differ)."""
        return all(s.status in SAME_DATA for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "identical": self.identical, "stages": [asdict(s) for s in self.stages]}


def diff(a: str | Source, b: str | Source, stage: str | None = None, sample: int = 5,
         max_ids: int = 100) -> DiffReport:
    """Compare two versions (run directories, `PATH@REV` stores or `ORG/NAME@REV` Hub repos).

    `sample`: changed rows shown with their values; `max_ids`: ids listed per kind (added, removed,
    changed; the counts are always complete)."""
    src_a = a if isinstance(a, Source) else open_source(a)
    src_b = b if isinstance(b, Source) else open_source(b)
    ma, mb = src_a.manifests(), src_b.manifests()
    names = [s for s in STAGE_ORDER if (s in ma or s in mb) and (stage is None or s == stage)]
    if stage is not None and not names:
        raise ValueError(f"stage {stage!r} is in neither {src_a.label} nor {src_b.label}")
    return DiffReport(src_a.label, src_b.label, [_stage_diff(s, src_a, src_b, ma.get(s), mb.get(s), sample, max_ids)
                                                 for s in names])


# ---------------------------------------------------------------------------------------------- per stage


def _shards(manifest: dict[str, Any], split: str = "train") -> dict[str, str]:
    return {s["files"][split]["file"]: s["files"][split]["sha256"] for s in manifest["shards"] if split in s["files"]}


def _split_rows(manifest: dict[str, Any], split: str) -> int:
    return sum(s["files"][split]["rows"] for s in manifest["shards"] if split in s["files"])


def _splits(*manifests: dict[str, Any]) -> list[str]:
    present = {split for m in manifests for s in m["shards"] for split in s["files"]}
    return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))


def _stage_diff(stage: str, src_a: Source, src_b: Source, ma: dict | None, mb: dict | None, sample: int,
                max_ids: int) -> StageDiff:
    if ma is None or mb is None:
        return StageDiff(stage, "removed" if mb is None else "added", counts=_counts(ma, mb))
    splits = {split: _split_diff(stage, split, src_a, src_b, ma, mb, sample, max_ids) for split in _splits(ma, mb)}
    statuses = {s.status for s in splits.values()}
    status = ("identical" if statuses <= {"identical"} else "files-only" if statuses <= set(SAME_DATA)
              else "changed")
    return StageDiff(stage, status, splits, counts=_counts(ma, mb), why=why(ma, mb))


def _split_diff(stage: str, split: str, src_a: Source, src_b: Source, ma: dict, mb: dict, sample: int,
                max_ids: int) -> SplitDiff:
    sa, sb = _shards(ma, split), _shards(mb, split)
    result = SplitDiff(split, "identical", (len(sa), len(sb)),
                       sorted(f for f in set(sa) | set(sb) if sa.get(f) != sb.get(f)),
                       (_split_rows(ma, split), _split_rows(mb, split)))
    if not sa or not sb:
        result.status = "added" if sb else "removed"
        return result
    if not result.shards_changed:
        return result
    # A file whose bytes the other side also holds (under any name) holds the same rows: never read it.
    held_a, held_b = set(sa.values()), set(sb.values())
    files_a = [f for f in sorted(sa) if sa[f] not in held_b]
    files_b = [f for f in sorted(sb) if sb[f] not in held_a]
    found = compare_shards([src_a.shard_path(stage, f) for f in files_a],
                           [src_b.shard_path(stage, f) for f in files_b], sample, max_ids)
    result.schema, result.rows, result.stats = found.schema, found.rows, found.stats
    result.status = "changed" if found.differs else "files-only"
    if not found.differs:
        result.file_causes = found.file_causes or (
            ["the same rows and types, encoded differently in Parquet"] if files_a or files_b
            else ["the same files under other names"])
    return result


def _counts(ma: dict | None, mb: dict | None) -> dict[str, Any]:
    def pick(m: dict | None) -> dict[str, Any]:
        return m["counts"] if m else {"rows_in": 0, "rows_out": 0, "dropped": {}}

    return {"a": pick(ma), "b": pick(mb)}


# ---------------------------------------------------------------------------------------------- why


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def why(ma: dict[str, Any], mb: dict[str, Any]) -> list[dict[str, Any]]:
    """Every manifest field that differs: config, models and revisions, seeds, prompts, code and engine versions."""
    fa, fb = flatten(ma), flatten(mb)
    stage = ma["stage"]

    def relevant(key: str) -> bool:
        if any(key == p or key.startswith(p + ".") for p in WHY_IGNORED):
            return False
        if key.startswith("config.stages.") and not key.startswith(f"config.stages.{stage}."):
            return False  # other stages' settings reach this one only through `input.fingerprint`
        return not (key.startswith("engines.") and key.endswith(".model"))  # a local cache path

    keys = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and relevant(k))
    return [{"field": k, "a": fa.get(k), "b": fb.get(k)} for k in keys]


# ---------------------------------------------------------------------------------------------- formats


def render(report: DiffReport, fmt: str) -> str:
    """The report as `text`, `markdown`, `json` or `html` (one self-contained page with plots)."""
    from .diffreport import render as render_report

    return render_report(report, fmt)
