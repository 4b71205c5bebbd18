"""`scalequest diff A B`: what changed between two versions of the dataset, and why.

Per stage: every file's bytes checked against its manifest (a store whose bytes and manifest disagree is
reported, never compared as data); shards compared by content digest from the manifests (unchanged shards
are never compared row by row; files with the same rows but other bytes are reported apart, with the cause:
another Parquet writer, other embedded metadata); the schema from changed shards' Parquet footers, rows
matched by id (added, removed, changed per column, with a sample and a text diff), distributions over the
changed shards (string lengths, numeric histograms, generator mix) and drop reasons; and the why: every
recipe field that differs, and the execution fields (engine, device, library versions) beside them."""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .params import flatten
from .run.records import FileRecord, Manifest, execution_differences
from .sources import Source, open_source
from .stages import STAGE_ORDER
from .store import VerificationError

NUMERIC_HISTOGRAM_COLUMNS = ("difficulty", "reward", "keep_draw")


@dataclass
class StageDiff:
    stage: str
    status: str  # identical | changed | added | removed
    shards_total: tuple[int, int] = (0, 0)
    shards_changed: list[str] = field(default_factory=list)
    schema: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    why: list[dict[str, Any]] = field(default_factory=list)
    execution: list[str] = field(default_factory=list)  # execution fields that differ (engine, libraries...)
    files_only: list[dict[str, str]] = field(default_factory=list)  # same rows, other bytes: file and cause
    corrupt: list[str] = field(default_factory=list)  # files whose bytes do not match their manifest


@dataclass
class DiffReport:
    a: str
    b: str
    stages: list[StageDiff]

    @property
    def identical(self) -> bool:
        return all(s.status == "identical" and not s.corrupt for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "identical": self.identical, "stages": [asdict(s) for s in self.stages]}


def diff(a: str | Source, b: str | Source, stage: str | None = None, sample: int = 5, verify: bool = True
         ) -> DiffReport:
    """Compare two versions (run directories, `PATH@REV` stores or `ORG/NAME@REV` Hub repos). With `verify`
    (the default), every file of both sides is checked against its manifest first, identical or not."""
    src_a = a if isinstance(a, Source) else open_source(a)
    src_b = b if isinstance(b, Source) else open_source(b)
    ma, mb = src_a.manifests(), src_b.manifests()
    names = [s for s in STAGE_ORDER if (s in ma or s in mb) and (stage is None or s == stage)]
    if stage is not None and not names:
        raise ValueError(f"stage {stage!r} is in neither {src_a.label} nor {src_b.label}")
    return DiffReport(src_a.label, src_b.label, [_stage_diff(s, src_a, src_b, ma.get(s), mb.get(s), sample, verify)
                                                 for s in names])


# ---------------------------------------------------------------------------------------------- per stage


def _shards(manifest: Manifest) -> dict[str, FileRecord]:
    return {f.file: f for f in manifest.split_files("train")}


def _verify(src: Source, manifest: Manifest | None) -> list[str]:
    problems = []
    for info in (manifest.files().values() if manifest else []):
        try:
            src.shard_path(manifest.stage, info)  # type: ignore[union-attr]
        except VerificationError as exc:
            problems.append(str(exc))
    return problems


def _file_only(a: FileRecord, b: FileRecord) -> str:
    """Why two files with the same rows differ in bytes."""
    if a.writer != b.writer:
        return f"same rows; files written by {a.writer} vs {b.writer}"
    return "same rows; the files differ in embedded metadata or encoding"


def _stage_diff(stage: str, src_a: Source, src_b: Source, ma: Manifest | None, mb: Manifest | None, sample: int,
                verify: bool = True) -> StageDiff:
    corrupt = [*_verify(src_a, ma), *_verify(src_b, mb)] if verify else []
    if ma is None or mb is None:
        m = ma or mb
        assert m is not None
        return StageDiff(stage, "removed" if mb is None else "added", counts=_counts(ma, mb), corrupt=corrupt,
                         rows={"a": ma.counts.rows_out if ma else 0, "b": mb.counts.rows_out if mb else 0})
    sa, sb = _shards(ma), _shards(mb)
    changed = sorted(f for f in set(sa) | set(sb) if f not in sa or f not in sb or sa[f].content != sb[f].content)
    same_files = {f.file: f for f in mb.files().values()}
    files_only = [{"file": f.file, "cause": _file_only(f, same_files[f.file])} for f in ma.files().values()
                  if f.file in same_files and f.content == same_files[f.file].content
                  and f.sha256 != same_files[f.file].sha256]
    result = StageDiff(stage, "changed" if changed or ma.counts != mb.counts else "identical", (len(sa), len(sb)),
                       changed, counts=_counts(ma, mb), why=why(ma, mb), execution=execution_differences(ma, mb),
                       files_only=files_only, corrupt=corrupt)
    if not changed or corrupt:
        return result
    aligned = set(sa) == set(sb)  # the same shard plan: compare changed shards pairwise, else every row
    files_a = [sa[f] for f in changed if f in sa] if aligned else [sa[f] for f in sorted(sa)]
    files_b = [sb[f] for f in changed if f in sb] if aligned else [sb[f] for f in sorted(sb)]
    paths_a = [src_a.shard_path(stage, f) for f in files_a]
    paths_b = [src_b.shard_path(stage, f) for f in files_b]
    schema_a = pq.read_schema(paths_a[0]) if paths_a else None
    schema_b = pq.read_schema(paths_b[0]) if paths_b else None
    result.schema = _schema_diff(schema_a, schema_b)
    result.rows, result.stats = _rows_and_stats(paths_a, paths_b, aligned, sample)
    return result


def _counts(ma: Manifest | None, mb: Manifest | None) -> dict[str, Any]:
    def pick(m: Manifest | None) -> dict[str, Any]:
        return m.counts.model_dump() if m else {"rows_in": 0, "rows_out": 0, "dropped": {}}

    return {"a": pick(ma), "b": pick(mb)}


def _schema_diff(a: pa.Schema | None, b: pa.Schema | None) -> dict[str, Any]:
    if a is None or b is None:
        return {}
    ta = {f.name: str(f.type) for f in a}
    tb = {f.name: str(f.type) for f in b}
    return {"added": [c for c in tb if c not in ta], "removed": [c for c in ta if c not in tb],
            "retyped": [{"column": c, "a": ta[c], "b": tb[c]} for c in ta if c in tb and ta[c] != tb[c]]}


# ---------------------------------------------------------------------------------------------- rows


def _rows_and_stats(paths_a: list, paths_b: list, aligned: bool, sample: int) -> tuple[dict, dict]:
    """Match rows by id and gather distributions, reading each changed shard once. Aligned shard plans
    compare shard pairs one at a time (memory: one pair), the next pair read while this one is compared."""
    from concurrent.futures import ThreadPoolExecutor

    out: dict[str, Any] = {"added": 0, "removed": 0, "changed": 0, "changed_by_column": {}, "samples": [],
                           "added_ids": [], "removed_ids": []}
    acc = {"a": _Accumulator(), "b": _Accumulator()}
    pairs = [([x], [y]) for x, y in zip(paths_a, paths_b, strict=True)] if aligned else [(paths_a, paths_b)]
    with ThreadPoolExecutor(max_workers=1) as reader:  # pyarrow releases the GIL while decoding
        pending = reader.submit(_read_pair, *pairs[0]) if pairs else None
        for i in range(len(pairs)):
            assert pending is not None
            ta, tb = pending.result()
            pending = reader.submit(_read_pair, *pairs[i + 1]) if i + 1 < len(pairs) else None
            acc["a"].add(ta)
            acc["b"].add(tb)
            _compare_tables(ta, tb, out, sample)
    out["changed_by_column"] = dict(sorted(out["changed_by_column"].items()))
    return out, _summarise(acc)


def _read_pair(paths_a: list, paths_b: list) -> tuple[pa.Table, pa.Table]:
    return _read(paths_a), _read(paths_b)


def _read(paths: list) -> pa.Table:
    tables = [pq.read_table(p) for p in paths]
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({"id": pa.array([], pa.string())})


def _compare_tables(ta: pa.Table, tb: pa.Table, out: dict[str, Any], sample: int) -> None:
    ids_a, ids_b = ta.column("id"), tb.column("id")
    if not ids_a.equals(ids_b):
        in_b = pc.is_in(ids_a, value_set=ids_b)
        in_a = pc.is_in(ids_b, value_set=ids_a)
        removed, added = ta.filter(pc.invert(in_b)), tb.filter(pc.invert(in_a))
        out["removed"] += removed.num_rows
        out["added"] += added.num_rows
        out["removed_ids"] = (out["removed_ids"] + removed.column("id").to_pylist())[:sample]
        out["added_ids"] = (out["added_ids"] + added.column("id").to_pylist())[:sample]
        ta = ta.filter(in_b).sort_by("id")
        tb = tb.filter(in_a).sort_by("id")
    common = [c for c in ta.column_names if c in tb.column_names and c != "id"]
    row_changed = np.zeros(ta.num_rows, dtype=bool)
    for col in common:
        a, b = ta.column(col), tb.column(col)
        if a.type != b.type:
            try:
                b = b.cast(a.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                a, b = a.cast(pa.string()), b.cast(pa.string())
        same = pc.fill_null(pc.equal(a, b), False)
        both_null = pc.and_(pc.is_null(a), pc.is_null(b))
        differs = np.asarray(pc.invert(pc.or_(same, both_null)).to_numpy(zero_copy_only=False), dtype=bool)
        n = int(differs.sum())
        if n:
            out["changed_by_column"][col] = out["changed_by_column"].get(col, 0) + n
            row_changed |= differs
            for i in np.flatnonzero(differs)[: max(0, sample - len(out["samples"]))]:
                out["samples"].append(_sample(ta, tb, int(i), col))
    out["changed"] += int(row_changed.sum())


def _sample(ta: pa.Table, tb: pa.Table, i: int, col: str) -> dict[str, Any]:
    va, vb = ta.column(col)[i].as_py(), tb.column(col)[i].as_py()
    text = ""
    if isinstance(va, str) and isinstance(vb, str):
        text = "\n".join(difflib.unified_diff(va.splitlines(), vb.splitlines(), "a", "b", lineterm="", n=1))
    return {"id": ta.column("id")[i].as_py(), "column": col, "a": _short(va), "b": _short(vb), "diff": text}


def _short(value: Any, limit: int = 300) -> Any:
    return value[:limit] + "..." if isinstance(value, str) and len(value) > limit else value


# ---------------------------------------------------------------------------------------------- distributions


def _summarise(acc: dict[str, _Accumulator]) -> dict[str, Any]:
    """Distributions over the changed shards of each side (unchanged shards contribute equally to both)."""
    out: dict[str, Any] = {}
    for col in sorted(set(acc["a"].lengths) | set(acc["b"].lengths)):
        out[f"len({col})"] = _histograms({s: acc[s].lengths.get(col) for s in "ab"}, quantiles=True)
    for col in sorted(set(acc["a"].numbers) | set(acc["b"].numbers)):
        out[col] = _histograms({s: acc[s].numbers.get(col) for s in "ab"})
    for col in sorted(set(acc["a"].categories) | set(acc["b"].categories)):
        out[col] = {s: dict(sorted(acc[s].categories.get(col, {}).items())) for s in "ab"}
    return out


class _Accumulator:
    def __init__(self) -> None:
        self.lengths: dict[str, list[np.ndarray]] = {}
        self.numbers: dict[str, list[np.ndarray]] = {}
        self.categories: dict[str, dict[str, int]] = {}

    def add(self, table: pa.Table) -> None:
        for name, column in zip(table.schema.names, table.columns, strict=True):
            if name == "generator" or name == "drop_reason":
                counts = self.categories.setdefault(name, {})
                for item in pc.value_counts(column).to_pylist():
                    key = str(item["values"])
                    counts[key] = counts.get(key, 0) + item["counts"]
            elif pa.types.is_string(column.type) and name not in ("id", "question_id", "response_id"):
                lengths = pc.fill_null(pc.utf8_length(column), 0).to_numpy()
                self.lengths.setdefault(name, []).append(lengths)
            elif name in NUMERIC_HISTOGRAM_COLUMNS and (pa.types.is_floating(column.type)
                                                       or pa.types.is_integer(column.type)):
                self.numbers.setdefault(name, []).append(
                    pc.drop_null(column).to_numpy().astype(float))


def _histograms(chunks: dict[str, list[np.ndarray] | None], quantiles: bool = False) -> dict[str, Any]:
    """A and B over the same 10 buckets (so the html plot compares like with like), means and quantiles."""
    values = {s: np.concatenate(c) if c else np.array([]) for s, c in chunks.items()}
    both = np.concatenate(list(values.values()))
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    edges = np.linspace(lo, hi if hi > lo else lo + 1, 11)
    out: dict[str, Any] = {"edges": [round(float(e), 6) for e in edges]}
    for side, v in values.items():
        stats: dict[str, Any] = {"n": int(v.size), "histogram": np.histogram(v, edges)[0].tolist(),
                                 "mean": round(float(v.mean()), 6) if v.size else None}
        if quantiles and v.size:
            stats.update(zip(("p10", "p50", "p90"), (float(q) for q in np.percentile(v, [10, 50, 90])), strict=True))
        out[side] = stats
    return out


# ---------------------------------------------------------------------------------------------- why


def why(ma: Manifest, mb: Manifest) -> list[dict[str, Any]]:
    """Every field of what defines the data that differs: the stage's config and parameters, models and their
    pinned revisions, seed, prompts, code version, engine settings, the input's fingerprint and content."""
    fa, fb = flatten({"fingerprint": ma.fingerprint, "recipe": ma.recipe.model_dump(mode="json")}), \
        flatten({"fingerprint": mb.fingerprint, "recipe": mb.recipe.model_dump(mode="json")})
    stage = ma.stage

    def relevant(key: str) -> bool:
        if key.startswith("recipe.config.stages.") and not key.startswith(f"recipe.config.stages.{stage}."):
            return False  # other stages' settings reach this one only through `recipe.input`
        return key not in ("recipe.input.revision", "recipe.input.commit")  # where it was published

    keys = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and relevant(k))
    return [{"field": k.removeprefix("recipe."), "a": fa.get(k), "b": fb.get(k)} for k in keys]


# ---------------------------------------------------------------------------------------------- formats


def format_text(report: DiffReport, markdown: bool = False) -> str:
    h = "## " if markdown else ""
    lines = [f"{'# ' if markdown else ''}diff {report.a} -> {report.b}: "
             f"{'identical' if report.identical else 'different'}", ""]
    for s in report.stages:
        lines.append(f"{h}{s.stage}: {s.status}{' - BYTES DO NOT MATCH THE MANIFEST' if s.corrupt else ''}")
        lines.extend(f"  CORRUPT: {problem}" for problem in s.corrupt)
        if s.status in ("added", "removed"):
            lines.append(f"  rows: {s.rows.get('a', 0)} -> {s.rows.get('b', 0)}")
            lines.append("")
            continue
        if s.status == "identical":
            lines.extend(_why_lines(s.why, "  same data; the manifests differ in:"))
            lines.extend(_execution_lines(s))
            lines.append("")
            continue
        lines.append(f"  shards changed: {len(s.shards_changed)} of {s.shards_total[0]} -> {s.shards_total[1]}")
        ca, cb = s.counts["a"], s.counts["b"]
        lines.append(f"  rows out: {ca['rows_out']} -> {cb['rows_out']};  dropped: {ca['dropped']} -> {cb['dropped']}")
        sc = s.schema
        if sc.get("added") or sc.get("removed") or sc.get("retyped"):
            lines.append(f"  SCHEMA: added {sc['added']}, removed {sc['removed']}, retyped "
                         f"{[(r['column'], r['a'], r['b']) for r in sc['retyped']]}")
        r = s.rows
        lines.append(f"  rows by id: {r['added']} added, {r['removed']} removed, {r['changed']} changed")
        for col, n in r["changed_by_column"].items():
            lines.append(f"    {col}: {n} changed")
        for ident in r["added_ids"]:
            lines.append(f"    + {ident}")
        for ident in r["removed_ids"]:
            lines.append(f"    - {ident}")
        for smp in r["samples"]:
            lines.append(f"    ~ {smp['id']} [{smp['column']}]: {smp['a']!r} -> {smp['b']!r}")
        for name, st in s.stats.items():
            if "edges" in st:
                a, b = st["a"], st["b"]
                if a != b:
                    median = f"p50 {a.get('p50')} -> {b.get('p50')}, " if "p50" in a or "p50" in b else ""
                    lines.append(f"  {name}: {median}mean {a['mean']} -> {b['mean']} (over changed shards)")
            elif st["a"] != st["b"]:
                lines.append(f"  {name}: {st['a']} -> {st['b']}")
        lines.extend(_why_lines(s.why, "  why (manifest differences):"))
        lines.extend(_execution_lines(s))
        lines.append("")
    return "\n".join(lines)


def _execution_lines(s: StageDiff) -> list[str]:
    lines = [f"  {f['file']}: {f['cause']}" for f in s.files_only]
    shown = [e for e in s.execution if e not in ("seconds", "started", "pid", "cost.wall_seconds",
                                                  "cost.worker_seconds", "cost.gpu_seconds", "files.sha256")]
    if shown:
        what = "reproduced in another environment" if s.status == "identical" else "executions differ"
        lines.append(f"  {what}: {', '.join(shown)}")
    return lines


def _why_lines(why: list[dict[str, Any]], heading: str) -> list[str]:
    if not why:
        return []
    return [heading, *(f"    {w['field']}: {json.dumps(w['a'])} -> {json.dumps(w['b'])}" for w in why)]


def format_html(report: DiffReport) -> str:
    import html

    parts = [f"<!doctype html><meta charset='utf-8'><title>scalequest diff</title>"
             f"<style>body{{font-family:sans-serif;max-width:60em;margin:auto}}td,th{{padding:2px 8px}}"
             f"pre{{background:#f6f6f6;padding:6px}}</style>"
             f"<h1>{html.escape(report.a)} &rarr; {html.escape(report.b)}</h1>"
             f"<p>{'identical' if report.identical else 'different'}</p>"]
    for s in report.stages:
        parts.append(f"<h2>{html.escape(s.stage)}: {s.status}</h2>")
        parts.extend(f"<p><b>corrupt</b>: {html.escape(p)}</p>" for p in s.corrupt)
        parts.extend(f"<p>{html.escape(line.strip())}</p>" for line in _execution_lines(s))
        if s.status != "changed":
            parts.append(_why_table(s.why, "same data; the manifests differ in"))
            continue
        parts.append(f"<p>{len(s.shards_changed)} shard(s) changed; rows by id: {s.rows['added']} added, "
                     f"{s.rows['removed']} removed, {s.rows['changed']} changed</p>")
        parts.append("<table><tr><th>column</th><th>rows changed</th></tr>" + "".join(
            f"<tr><td>{html.escape(c)}</td><td>{n}</td></tr>" for c, n in s.rows["changed_by_column"].items())
            + "</table>")
        if any(s.schema.get(k) for k in ("added", "removed", "retyped")):
            parts.append(f"<p><b>schema</b>: {html.escape(json.dumps(s.schema))}</p>")
        for smp in s.rows["samples"]:
            parts.append(f"<h4>{html.escape(smp['id'])} [{html.escape(smp['column'])}]</h4>"
                         f"<pre>{html.escape(smp['diff'] or f'{smp[chr(97)]!r} -> {smp[chr(98)]!r}')}</pre>")
        for name, st in s.stats.items():
            if "edges" in st:
                parts.append(f"<h4>{html.escape(name)}</h4>" + _svg_histogram(st))
        parts.append(_why_table(s.why, "why"))
    return "\n".join(parts)


def _why_table(why: list[dict[str, Any]], heading: str) -> str:
    import html

    if not why:
        return ""
    return (f"<h3>{heading}</h3><table><tr><th>field</th><th>a</th><th>b</th></tr>" + "".join(
        f"<tr><td>{html.escape(w['field'])}</td><td>{html.escape(json.dumps(w['a']))}</td>"
        f"<td>{html.escape(json.dumps(w['b']))}</td></tr>" for w in why) + "</table>")


def _svg_histogram(st: dict[str, Any], width: int = 480, height: int = 120) -> str:
    """A/B bars per bucket, inline SVG (no plotting dependency)."""
    ha, hb = st["a"]["histogram"], st["b"]["histogram"]
    top = max([*ha, *hb, 1])
    slot = width / len(ha)
    bars = []
    for i, (x, y) in enumerate(zip(ha, hb, strict=True)):
        for j, (v, color) in enumerate(((x, "#4878d0"), (y, "#ee854a"))):
            h = height * v / top
            bars.append(f"<rect x='{i * slot + j * slot / 2:.1f}' y='{height - h:.1f}' width='{slot / 2 - 1:.1f}' "
                        f"height='{h:.1f}' fill='{color}'><title>{'ab'[j]}: {v}</title></rect>")
    return (f"<svg width='{width}' height='{height + 14}' xmlns='http://www.w3.org/2000/svg'>{''.join(bars)}"
            f"<text x='0' y='{height + 12}' font-size='10'>{st['edges'][0]}</text>"
            f"<text x='{width - 30}' y='{height + 12}' font-size='10'>{st['edges'][-1]}</text></svg>"
            "<div><span style='color:#4878d0'>&#9632; a</span> <span style='color:#ee854a'>&#9632; b</span></div>")


def render(report: DiffReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str)
    if fmt == "html":
        return format_html(report)
    return format_text(report, markdown=fmt == "markdown")
