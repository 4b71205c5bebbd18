"""`scalequest diff A B`: what changed between two versions of the dataset, and why.

First every file of both sides is fetched and checked against its manifest (`Source.file`: size, sha256 and the
content digest recomputed from its rows; a store whose bytes and manifest disagree is reported as corrupt, never
compared as data), so the content digests compared below are the files' own. Then per stage and per split (`train`, and `dropped`): shards
compared by content digest from the manifests - a file whose rows the other side also holds is never read,
and same rows in other bytes are reported apart with the cause (another Parquet writer, other metadata) -
then the rows of the others matched by id and compared exactly, whatever their Arrow types (`rowdiff`: added,
removed, changed per column, samples with a text diff, and the schema: columns added, removed, retyped),
distributions over the shards read (`diffstats`) and drop reasons; and the why: every recipe field that
differs, with the execution fields (engine, device, library versions) beside them. Rendered as text,
markdown, json or a self-contained html page (`diffreport`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..recipe.params import ConfigError, flatten
from ..revisions.locator import Source, open_source
from ..revisions.stores import VerificationError
from ..run.records import FileRecord, Manifest, execution_differences
from ..stages import STAGE_ORDER
from .rows import compare_shards, file_causes, read_footer

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
    execution: list[str] = field(default_factory=list)  # execution fields that differ (engine, libraries...)
    corrupt: list[str] = field(default_factory=list)  # files whose bytes do not match their manifest
    # rows changed (train and dropped) because their own input changed / because the stage's own recipe did
    because: dict[str, int] = field(default_factory=dict)

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
        """The same data: every stage has the same rows and types (its files may still differ), and every byte
        read matches its manifest."""
        return all(s.status in SAME_DATA and not s.corrupt for s in self.stages)

    def recipe_changes(self) -> list[dict[str, Any]]:
        """The recipe fields that changed, stage by stage in pipeline order (a stage's input excluded): the first
        is where the versions part."""
        from .cause import own_changes

        return [{"stage": s.stage, **w} for s in self.stages for w in own_changes(s.why)]

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "identical": self.identical, "recipe_changes": self.recipe_changes(),
                "stages": [asdict(s) for s in self.stages]}


def diff(a: str | Source, b: str | Source, stage: str | None = None, sample: int = 5,
         max_ids: int = 100, verify: bool = True) -> DiffReport:
    """Compare two versions (run directories, `PATH@REV` stores or `ORG/NAME@REV` Hub repos).

    `sample`: changed rows shown with their values; `max_ids`: ids listed per kind (added, removed,
    changed; the counts are always complete); `verify`: check every file's bytes against its manifest first
    (without it, identical manifests are trusted and nothing is read)."""
    src_a = a if isinstance(a, Source) else open_source(a)
    src_b = b if isinstance(b, Source) else open_source(b)
    ma, mb = src_a.manifests(), src_b.manifests()
    names = [s for s in STAGE_ORDER if (s in ma or s in mb) and (stage is None or s == stage)]
    if stage is not None and not names:
        raise ConfigError(f"stage {stage!r} is in neither {src_a.label} nor {src_b.label}")
    report = DiffReport(src_a.label, src_b.label, [_stage_diff(s, src_a, src_b, ma.get(s), mb.get(s), sample,
                                                               max_ids, verify) for s in names])
    from .cause import attribute, own_changes

    for s in report.stages:
        if s.status == "changed":
            s.because = attribute(s.stage, src_a, src_b, ma[s.stage], mb[s.stage], bool(own_changes(s.why)))
    return report


# ---------------------------------------------------------------------------------------------- per stage


def _shards(manifest: Manifest, split: str = "train") -> dict[str, FileRecord]:
    return {f.file: f for f in manifest.split_files(split)}


def _splits(*manifests: Manifest) -> list[str]:
    present = {split for m in manifests for split in m.splits()}
    return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))


def _verify(src: Source, manifest: Manifest | None) -> list[str]:
    problems = []
    for info in (manifest.files().values() if manifest else []):
        try:
            src.file(manifest.stage, info)  # type: ignore[union-attr]
        except VerificationError as exc:
            problems.append(str(exc))
    return problems


def _stage_diff(stage: str, src_a: Source, src_b: Source, ma: Manifest | None, mb: Manifest | None, sample: int,
                max_ids: int, verify: bool = True) -> StageDiff:
    corrupt = [*_verify(src_a, ma), *_verify(src_b, mb)] if verify else []
    if ma is None or mb is None:
        return StageDiff(stage, "removed" if mb is None else "added", counts=_counts(ma, mb), corrupt=corrupt)
    result = StageDiff(stage, "identical", counts=_counts(ma, mb), why=why(ma, mb),
                       execution=execution_differences(ma, mb), corrupt=corrupt)
    if corrupt:  # bytes that do not match their manifest are not data to compare
        result.status = "corrupt"
        return result
    result.splits = {split: _split_diff(stage, split, src_a, src_b, ma, mb, sample, max_ids)
                     for split in _splits(ma, mb)}
    statuses = {s.status for s in result.splits.values()}
    result.status = ("identical" if statuses <= {"identical"} else "files-only" if statuses <= set(SAME_DATA)
                     else "changed")
    return result


def _split_diff(stage: str, split: str, src_a: Source, src_b: Source, ma: Manifest, mb: Manifest, sample: int,
                max_ids: int) -> SplitDiff:
    sa, sb = _shards(ma, split), _shards(mb, split)
    changed = sorted(f for f in set(sa) | set(sb) if f not in sa or f not in sb or sa[f].sha256 != sb[f].sha256)
    result = SplitDiff(split, "identical", (len(sa), len(sb)), changed, (ma.rows(split), mb.rows(split)))
    if not sa or not sb:
        result.status = "added" if sb else "removed"
        return result
    if not changed:
        return result
    # A file whose rows the other side also holds (same content digest, under any name) is never read.
    held_a, held_b = {f.content for f in sa.values()}, {f.content for f in sb.values()}
    files_a = [sa[f] for f in sorted(sa) if sa[f].content not in held_b]
    files_b = [sb[f] for f in sorted(sb) if sb[f].content not in held_a]
    if not files_a and not files_b:  # the same rows everywhere: only the files differ
        result.status = "files-only"
        result.file_causes = _file_causes(stage, src_a, src_b, sa, sb)
        return result
    found = compare_shards([src_a.file(stage, f).path for f in files_a],
                           [src_b.file(stage, f).path for f in files_b], sample, max_ids)
    result.schema, result.rows, result.stats = found.schema, found.rows, found.stats
    result.status = "changed" if found.differs else "files-only"
    if not found.differs:
        result.file_causes = found.file_causes or ["the same rows and types, encoded differently in Parquet"]
    return result


def _file_causes(stage: str, src_a: Source, src_b: Source, sa: dict[str, FileRecord], sb: dict[str, FileRecord]
                 ) -> list[str]:
    """Why files with the same rows differ in bytes: the writers the records name, else the files' footers
    (schema metadata), else their encoding. Only footers are read."""
    if sorted(f.sha256 for f in sa.values()) == sorted(f.sha256 for f in sb.values()):
        return ["the same files under other names"]
    by_content = {f.content: f for f in sb.values()}
    pairs = [(f, by_content[f.content]) for f in sa.values() if f.sha256 != by_content[f.content].sha256]
    footers_a = [read_footer(src_a.file(stage, a).path) for a, _ in pairs]
    footers_b = [read_footer(src_b.file(stage, b).path) for _, b in pairs]
    return file_causes(footers_a, footers_b) or ["the same rows and types, encoded differently in Parquet"]


def _counts(ma: Manifest | None, mb: Manifest | None) -> dict[str, Any]:
    def pick(m: Manifest | None) -> dict[str, Any]:
        return m.counts.model_dump() if m else {"rows_in": 0, "rows_out": 0, "dropped": {}}

    return {"a": pick(ma), "b": pick(mb)}


# ---------------------------------------------------------------------------------------------- why


def why(ma: Manifest, mb: Manifest) -> list[dict[str, Any]]:
    """Every field of what defines the data that differs: the stage's config and parameters, models and their
    pinned revisions, seed, prompts, code version, engine settings, the input's fingerprint and content."""
    fa = flatten({"fingerprint": ma.fingerprint, "recipe": ma.recipe.model_dump(mode="json")})
    fb = flatten({"fingerprint": mb.fingerprint, "recipe": mb.recipe.model_dump(mode="json")})
    stage = ma.stage

    def relevant(key: str) -> bool:
        if key.startswith("recipe.config.stages.") and not key.startswith(f"recipe.config.stages.{stage}."):
            return False  # other stages' settings reach this one only through `recipe.input`
        return key not in ("recipe.input.revision", "recipe.input.commit")  # where it was published

    keys = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and relevant(k))
    return [{"field": k.removeprefix("recipe."), "a": fa.get(k), "b": fb.get(k)} for k in keys]


# ---------------------------------------------------------------------------------------------- formats


def render(report: DiffReport, fmt: str) -> str:
    """The report as `text`, `markdown`, `json` or `html` (one self-contained page with plots)."""
    from .report import render as render_report

    return render_report(report, fmt)
