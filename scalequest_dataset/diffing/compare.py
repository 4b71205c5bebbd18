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
from typing import TYPE_CHECKING, Any

from ..recipe.params import ConfigError, flatten
from ..revisions.locator import Source, open_source
from ..revisions.stores import VerificationError
from ..run.records import FileRecord, Manifest, execution_differences
from ..stages import stage_order

if TYPE_CHECKING:  # pyarrow is imported where rows are read: an identical diff never needs it
    import pyarrow as pa

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
    names = [s for s in stage_order() if (s in ma or s in mb) and (stage is None or s == stage)]
    if stage is not None and not names:
        raise ConfigError(f"stage {stage!r} is in neither {src_a.label} nor {src_b.label}")
    pair = _Pair(src_a, src_b, sample, max_ids, verify)
    report = DiffReport(src_a.label, src_b.label, [pair.stage(s, ma.get(s), mb.get(s)) for s in names])
    if any(s.status == "changed" for s in report.stages):
        from .cause import attribute, own_changes

        for s in report.stages:
            if s.status == "changed":
                s.because = attribute(s.stage, ma[s.stage], mb[s.stage], bool(own_changes(s.why)),
                                      pair.flagged[s.stage], pair.keyed)
    return report


# ---------------------------------------------------------------------------------------------- per stage


def _shards(manifest: Manifest, split: str = "train") -> dict[str, FileRecord]:
    return {f.file: f for f in manifest.split_files(split)}


def _splits(*manifests: Manifest) -> list[str]:
    present = {split for m in manifests for split in m.splits()}
    return [s for s in SPLITS if s in present] + sorted(present - set(SPLITS))


class _Pair:
    """Two versions compared stage by stage. With `verify`, every file is checked against its manifest, each as
    far as the diff relies on it, and read once:
    - a file whose twin on the other side has the same name and sha256: its bytes (size, sha256) only. Two files
      whose bytes hash alike hold the same rows, whatever either manifest says about them.
    - a file whose rows are compared: its bytes, and its row count as decoded. What the diff says of it comes from
      those rows alone; its record's content digest decides nothing (it only chose the file for comparing), so it
      is not recomputed here: that would hash every value once more (`load` and `regenerate` do, as they must);
    - any other file (its rows are held by a file of the other side, by the records' content digests; a stage
      or split on one side only): in full, content digest recomputed, before anything is decided from it.
    A file that fails makes its stage "corrupt": its bytes are not data to compare."""

    def __init__(self, src_a: Source, src_b: Source, sample: int, max_ids: int, verify: bool) -> None:
        self.src_a, self.src_b, self.sample, self.max_ids, self.verify = src_a, src_b, sample, max_ids, verify
        self.flagged: dict[str, pa.Table] = {}  # per changed stage: ids (and origins) of rows that changed

    def stage(self, stage: str, ma: Manifest | None, mb: Manifest | None) -> StageDiff:
        if ma is None or mb is None:
            corrupt = [*self._check(self.src_a, ma), *self._check(self.src_b, mb)]
            return StageDiff(stage, "removed" if mb is None else "added", counts=_counts(ma, mb), corrupt=corrupt)
        result = StageDiff(stage, "identical", counts=_counts(ma, mb), why=why(ma, mb),
                           execution=execution_differences(ma, mb))
        splits = _splits(ma, mb)
        plans = {split: self._plan(_shards(ma, split), _shards(mb, split), split != "train") for split in splits}
        if self.verify:
            for side, src, m in ((0, self.src_a, ma), (1, self.src_b, mb)):
                for plan in plans.values():
                    result.corrupt += self._check(src, m, plan["bytes"][side], rows=False)
                    result.corrupt += self._check(src, m, plan["full"][side])
                    result.corrupt += self._check(src, m, plan["compare"][side], rows=False)
        if result.corrupt:  # bytes that do not match their manifest are not data to compare
            result.status = "corrupt"
            return result
        try:
            result.splits = {split: self._split(stage, split, ma, mb, plans[split]) for split in splits}
        except VerificationError as exc:  # rows that do not match their manifest, found while comparing them
            result.corrupt, result.splits, result.status = [str(exc)], {}, "corrupt"
            return result
        statuses = {s.status for s in result.splits.values()}
        result.status = ("identical" if statuses <= {"identical"} else "files-only" if statuses <= set(SAME_DATA)
                         else "changed")
        return result

    @staticmethod
    def _plan(sa: dict[str, FileRecord], sb: dict[str, FileRecord], empty_is_rows: bool = False) -> dict[str, Any]:
        """Which files of a split are compared, which only need their bytes checked, and which need a full check
        (as pairs of lists: side a, side b). `empty_is_rows`: a `dropped` split with no files on one side is
        empty there (a shard that drops nothing writes no file), so the other side's rows are compared with none."""
        twins = {f for f in sa if f in sb and sa[f].sha256 == sb[f].sha256}
        if (not sa or not sb) and empty_is_rows and (sa or sb):
            return {"twins": twins, "bytes": ([], []), "full": ([], []),
                    "compare": (list(sa.values()), list(sb.values()))}
        if not sa or not sb:
            return {"twins": twins, "bytes": ([], []), "full": (list(sa.values()), list(sb.values())),
                    "compare": ([], [])}
        # A file whose rows the other side also holds (same content digest, under any name) is never compared.
        held_a, held_b = {f.content for f in sa.values()}, {f.content for f in sb.values()}
        rest_a = [sa[f] for f in sorted(sa) if f not in twins]
        rest_b = [sb[f] for f in sorted(sb) if f not in twins]
        return {"twins": twins, "bytes": ([sa[f] for f in sorted(twins)], [sb[f] for f in sorted(twins)]),
                "full": ([f for f in rest_a if f.content in held_b], [f for f in rest_b if f.content in held_a]),
                "compare": ([f for f in rest_a if f.content not in held_b], [f for f in rest_b if f.content not in held_a])}

    def _check(self, src: Source, manifest: Manifest | None, files: list[FileRecord] | None = None,
               rows: bool = True) -> list[str]:
        if not self.verify or manifest is None:
            return []
        problems = []
        for info in manifest.files().values() if files is None else files:
            try:
                src.file(manifest.stage, info, rows=rows)
            except VerificationError as exc:
                problems.append(str(exc))
        return problems

    def _split(self, stage: str, split: str, ma: Manifest, mb: Manifest, plan: dict[str, Any]) -> SplitDiff:
        sa, sb = _shards(ma, split), _shards(mb, split)
        changed = sorted((set(sa) | set(sb)) - plan["twins"])
        result = SplitDiff(split, "identical", (len(sa), len(sb)), changed, (ma.rows(split), mb.rows(split)))
        if (not sa or not sb) and not plan["compare"][0] and not plan["compare"][1]:
            result.status = "added" if sb else "removed"
            return result
        if not changed:
            return result
        files_a, files_b = plan["compare"]
        if not files_a and not files_b:  # the same rows everywhere: only the files differ
            result.status = "files-only"
            result.file_causes = _file_causes(stage, self.src_a, self.src_b, sa, sb)
            return result
        found = self.compare(stage, files_a, files_b, keep=True)
        result.schema, result.rows, result.stats = found.schema, found.rows, found.stats
        flagged = self.flagged.get(stage)
        if flagged is not None:
            import pyarrow as pa

            found.flagged = pa.concat_tables([flagged, found.flagged], promote_options="permissive")
        self.flagged[stage] = found.flagged
        result.status = "changed" if found.differs else "files-only"
        if not found.differs:
            result.file_causes = found.file_causes or ["the same rows and types, encoded differently in Parquet"]
        return result

    def compare(self, stage: str, files_a: list[FileRecord], files_b: list[FileRecord], keep: bool = False,
                sample: int | None = None):
        """The rows of these files, each side's rows checked against their records as they are decoded."""
        from .rows import compare_shards

        paths_a = {self.src_a.file(stage, f, rows=False).path: f for f in files_a}
        paths_b = {self.src_b.file(stage, f, rows=False).path: f for f in files_b}
        return compare_shards(list(paths_a), list(paths_b), self.sample if sample is None else sample,
                              self.max_ids, keep, _count_check(self.src_a, paths_a), _count_check(self.src_b, paths_b))

    def keyed(self, stage: str):
        """The lineage of the `train` rows of `stage` that differ between the sides (for the attribution); None
        when a side has no such stage."""
        ma, mb = self.src_a.manifests().get(stage), self.src_b.manifests().get(stage)
        if ma is None or mb is None:
            return None
        sa, sb = _shards(ma), _shards(mb)
        plan = self._plan(sa, sb)
        for side, src, m in ((0, self.src_a, ma), (1, self.src_b, mb)):
            problems = [*self._check(src, m, plan["full"][side]), *self._check(src, m, plan["compare"][side], False)]
            if problems:
                raise VerificationError(problems[0])
        return self.compare(stage, *plan["compare"], keep=True, sample=0)


def _count_check(src: Source, records: dict[Any, FileRecord]):
    def check(path, table) -> None:
        info = records[path]
        if table.num_rows != info.rows:
            raise VerificationError(f"{src.label}: {info.file} holds {table.num_rows} rows, its manifest says "
                                    f"{info.rows}")
    return check


def _file_causes(stage: str, src_a: Source, src_b: Source, sa: dict[str, FileRecord], sb: dict[str, FileRecord]
                 ) -> list[str]:
    """Why files with the same rows differ in bytes: the writers the records name, else the files' footers
    (schema metadata), else their encoding. Only footers are read."""
    from .rows import file_causes, read_footer

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
