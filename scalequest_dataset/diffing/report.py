"""A diff report as text, markdown, json or one self-contained html page (plots inline as data: URIs)."""

from __future__ import annotations

import base64
import difflib
import html
import json
import re
from typing import TYPE_CHECKING, Any

from .compare import SAME_DATA

if TYPE_CHECKING:
    from .compare import DiffReport, SplitDiff, StageDiff

STATUS_WORDS = {"identical": "identical", "files-only": "same data, other files", "changed": "changed",
                "added": "added in B", "removed": "removed in B"}
TEXT_IDS = 10  # ids listed per kind in text (json and html list all the report kept)


def render(report: DiffReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_dict(), indent=2, sort_keys=True, default=str)
    if fmt == "html":
        return format_html(report)
    return format_text(report, markdown=fmt == "markdown")


def verdict(report: DiffReport) -> str:
    corrupt = [s.stage for s in report.stages if s.corrupt]
    if corrupt:
        return f"BYTES DO NOT MATCH THEIR MANIFEST in {', '.join(corrupt)}"
    if all(s.status == "identical" for s in report.stages):
        return "identical"
    if report.identical:
        return "same data (files differ)"
    changed = sum(s.status not in ("identical", "files-only") for s in report.stages)
    return f"different: {changed} of {len(report.stages)} stage(s) changed"


# ---------------------------------------------------------------------------------------------- text


def format_text(report: DiffReport, markdown: bool = False) -> str:
    h = "## " if markdown else ""
    lines = [f"{'# ' if markdown else ''}diff {report.a} -> {report.b}: {verdict(report)}", ""]
    changes = report.recipe_changes()
    if changes:
        lines.append(f"{h}recipe changed (first where the versions part):")
        lines.extend(f"  {c['stage']}: {c['field']}: {_short(json.dumps(c['a']))} -> {_short(json.dumps(c['b']))}"
                     for c in changes)
        lines.append("")
    for s in report.stages:
        lines.append(f"{h}{s.stage}: {s.status}")
        lines.extend(f"  CORRUPT: {problem}" for problem in s.corrupt)
        ca, cb = s.counts["a"], s.counts["b"]
        if s.status in ("added", "removed"):
            lines.append(f"  rows out: {ca['rows_out']} -> {cb['rows_out']}")
        elif s.status == "identical":
            lines.extend(_why_lines(s.why, "  same data; the manifests differ in:"))
            lines.extend(_execution_lines(s))
        elif s.status != "corrupt":
            lines.append(f"  rows out: {ca['rows_out']} -> {cb['rows_out']};  dropped: {ca['dropped']} -> {cb['dropped']}")
            if s.because:
                lines.append(f"  rows changed: {s.because['input']:,} because their input changed, "
                             f"{s.because['recipe']:,} because this stage's own recipe changed")
            for split in s.splits.values():
                lines.extend(_split_lines(split))
            lines.extend(_why_lines(s.why, "  why (manifest differences):"))
            lines.extend(_execution_lines(s))
        lines.append("")
    return "\n".join(lines)


def execution_fields(s: StageDiff) -> list[str]:
    """The execution fields that differ, without those every run changes (timings, process ids)."""
    from ..run.records import RUN_NOISE

    return [e for e in s.execution if e not in RUN_NOISE]


def _execution_lines(s: StageDiff) -> list[str]:
    shown = execution_fields(s)
    if not shown:
        return []
    what = "reproduced in another environment" if s.status in SAME_DATA else "the executions differ"
    return [f"  {what}: {', '.join(shown)}"]


def _split_lines(sp: SplitDiff) -> list[str]:
    head = f"  [{sp.split}] {sp.status}"
    if sp.status == "identical":
        return [f"{head} ({sp.shards_total[0]} shard(s))"]
    if sp.status in ("added", "removed"):
        return [f"{head}: rows {sp.rows_total[0]} -> {sp.rows_total[1]}"]
    lines = [f"{head}: {len(sp.shards_changed)} shard(s) changed of {sp.shards_total[0]} -> {sp.shards_total[1]}; "
             f"rows {sp.rows_total[0]} -> {sp.rows_total[1]}"]
    if sp.status == "files-only":
        return [*lines, *(f"    {cause}" for cause in sp.file_causes)]
    sc = sp.schema
    if sc.get("added") or sc.get("removed") or sc.get("retyped"):
        lines.append(f"    SCHEMA: added {sc['added']}, removed {sc['removed']}, retyped "
                     f"{[(r['column'], r['a'], r['b']) for r in sc['retyped']]}")
    r = sp.rows
    lines.append(f"    rows by id: {r['added']} added, {r['removed']} removed, {r['changed']} changed "
                 f"(of {r['compared']} on both sides)")
    lines.extend(f"      {col}: {n} changed" for col, n in r["changed_by_column"].items())
    lines.extend(f"      + {ident}" for ident in r["added_ids"][:TEXT_IDS])
    lines.extend(f"      - {ident}" for ident in r["removed_ids"][:TEXT_IDS])
    for smp in r["samples"]:
        for ch in smp["changes"]:
            lines.append(f"      ~ {smp['id']} [{ch['column']}]: {_short(ch['a'])} -> {_short(ch['b'])}")
    for name, st in sp.stats.items():
        if st["kind"] in ("length", "number"):
            a, b = st["a"], st["b"]
            if a != b:
                median = f"p50 {a.get('p50')} -> {b.get('p50')}, " if "p50" in a or "p50" in b else ""
                lines.append(f"    {name}: {median}mean {a['mean']} -> {b['mean']} (over the shards read)")
        elif st["a"] != st["b"]:
            lines.append(f"    {name}: {st['a']} -> {st['b']}")
    return lines


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text[:limit] + "..." if len(text) > limit else text


def _why_lines(why: list[dict[str, Any]], heading: str) -> list[str]:
    if not why:
        return []
    return [heading, *(f"    {w['field']}: {json.dumps(w['a'])} -> {json.dumps(w['b'])}" for w in why)]


# ---------------------------------------------------------------------------------------------- html

CSS = """
:root{--a:#4878d0;--b:#ee854a;--ink:#1d2330;--muted:#5b6475;--line:#dfe3ea;--bg:#f7f8fa}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--ink);
 max-width:72rem;margin:0 auto;padding:1.5rem 2rem 4rem}
h1{font-size:1.7rem;margin:0 0 .5rem}h2{font-size:1.35rem;margin:2.2rem 0 .6rem;padding-top:.6rem;
 border-top:2px solid var(--line)}h3{font-size:1.08rem;margin:1.6rem 0 .4rem}h4{margin:.2rem 0}
code,pre,.mono{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,monospace;font-size:.86em}
dl.versions{display:grid;grid-template-columns:auto 1fr;gap:.15rem .8rem;margin:.4rem 0}
dl.versions dt{font-weight:700}dl.versions dd{margin:0;overflow-wrap:anywhere}
.verdict{display:inline-block;font-weight:700;padding:.35rem .8rem;border-radius:.4rem;margin:.6rem 0}
.badge{display:inline-block;font-size:.75rem;font-weight:700;padding:.1rem .5rem;border-radius:1rem;
 vertical-align:middle;white-space:nowrap}
.s-identical{background:#e3f4e1;color:#21622a}.s-files-only{background:#e6eefb;color:#27467d}
.s-changed{background:#fdebd8;color:#8a4210}.s-added,.s-removed{background:#f3e3f7;color:#6d2a7e}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.92rem}
th,td{padding:.32rem .7rem;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
thead th{background:var(--bg);border-bottom:2px solid var(--line)}td.num,th.num{text-align:right;
 font-variant-numeric:tabular-nums}tbody tr:hover{background:#fafbfc}
.muted{color:var(--muted)}.facts{color:var(--muted);margin:.2rem 0 .8rem}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(26rem,1fr));gap:1rem;margin:.6rem 0}
figure{margin:0;padding:.5rem;border:1px solid var(--line);border-radius:.4rem;background:#fff}
figure img{width:100%;height:auto;display:block}figcaption{font-size:.8rem;color:var(--muted);margin-top:.2rem}
.sample{border:1px solid var(--line);border-radius:.4rem;margin:.8rem 0;overflow:hidden}
.sample h4{background:var(--bg);padding:.35rem .7rem;border-bottom:1px solid var(--line)}
.sample table{margin:0;width:100%}.sample td:first-child{width:11rem}
.wdiff{white-space:pre-wrap;overflow-wrap:anywhere;margin:0}
del{background:#ffd9d6;color:#8d1a12;text-decoration:line-through}ins{background:#d5f5d9;color:#0d5a1d;
 text-decoration:none}.gap{color:var(--muted);font-style:italic}
details{margin:.3rem 0}summary{cursor:pointer;color:var(--muted)}
.legend-a{color:var(--a);font-weight:700}.legend-b{color:var(--b);font-weight:700}
"""


def format_html(report: DiffReport) -> str:
    status = "identical" if report.identical else "changed"
    body = [f"<header><h1>Dataset diff</h1><dl class='versions'><dt class='legend-a'>A</dt><dd><code>"
            f"{_e(report.a)}</code></dd><dt class='legend-b'>B</dt><dd><code>{_e(report.b)}</code></dd></dl>"
            f"<p class='verdict s-{status}'>{_e(verdict(report))}</p></header>",
            _summary(report)]
    body.extend(_stage_section(s) for s in report.stages)
    return ("<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>diff {_e(report.a)} &rarr; {_e(report.b)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _badge(status: str) -> str:
    return f"<span class='badge s-{status}'>{_e(STATUS_WORDS.get(status, status))}</span>"


def _summary(report: DiffReport) -> str:
    rows = []
    for s in report.stages:
        ca, cb = s.counts["a"], s.counts["b"]
        cells = [f"<td><a href='#stage-{_e(s.stage)}'>{_e(s.stage)}</a></td><td>{_badge(s.status)}</td>",
                 f"<td class='num'>{ca['rows_out']:,} &rarr; {cb['rows_out']:,}</td>"]
        for split in ("train", "dropped"):
            sp = s.splits.get(split)
            cells.append(f"<td>{_split_cell(sp)}</td>")
        schema = sum(len(sp.schema.get(k, [])) for sp in s.splits.values() for k in ("added", "removed", "retyped"))
        cells.append(f"<td class='num'>{schema or '-'}</td><td class='num'>{len(s.why) or '-'}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    table = ("<table class='summary'><thead><tr><th>stage</th><th>status</th><th class='num'>rows out A &rarr; B</th>"
             "<th>train split</th><th>dropped split</th><th class='num'>schema changes</th>"
             "<th class='num'>manifest fields that differ</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    figure = ""
    if not report.identical:
        from . import plots

        funnel = {side: [{"stage": s.stage, "rows_out": s.counts[side]["rows_out"]} for s in report.stages]
                  for side in ("a", "b")}
        figure = "<div class='figures'>" + _figure(plots.funnel_comparison(funnel["a"], funnel["b"]),
                                                   "Rows out of every stage, A beside B (from the manifests)") + "</div>"
    return f"<section id='summary'><h2>Summary</h2>{table}{figure}</section>"


def _split_cell(sp: SplitDiff | None) -> str:
    if sp is None:
        return "<span class='muted'>-</span>"
    if sp.status != "changed":
        return _badge(sp.status)
    r = sp.rows
    parts = [f"{r[k]:,} {k}" for k in ("added", "removed", "changed") if r[k]]
    if any(sp.schema.get(k) for k in ("added", "removed", "retyped")):
        parts.append("schema")
    return ", ".join(parts) or "changed"


def _stage_section(s: StageDiff) -> str:
    ca, cb = s.counts["a"], s.counts["b"]
    parts = [f"<section class='stage' id='stage-{_e(s.stage)}'><h2>{_e(s.stage)} {_badge(s.status)}</h2>",
             f"<p class='facts'>rows in {ca['rows_in']:,} &rarr; {cb['rows_in']:,}; rows out {ca['rows_out']:,} "
             f"&rarr; {cb['rows_out']:,}; dropped {sum(ca['dropped'].values()):,} &rarr; "
             f"{sum(cb['dropped'].values()):,}</p>"]
    parts.extend(f"<p class='corrupt'><b>corrupt</b>: {_e(problem)}</p>" for problem in s.corrupt)
    if execution_fields(s):
        what = "reproduced in another environment" if s.status in SAME_DATA else "the executions differ"
        parts.append(f"<p>{what}: {_e(', '.join(execution_fields(s)))}</p>")
    if s.status == "corrupt":
        return "\n".join([*parts, "</section>"])
    if s.status == "identical":  # one line, and the manifest fields (if any) folded away
        splits = "; ".join(f"{sp.split}: {sp.shards_total[0]:,} shard(s), {sp.rows_total[0]:,} rows"
                           for sp in s.splits.values())
        parts.append(f"<p>The same files ({_e(splits)}).</p>")
        if s.why:
            parts.append(f"<details><summary>same data; the manifests differ in {len(s.why)} field(s)</summary>"
                         f"{_why_table(s.why, 'same data; the manifests differ in')}</details>")
        return "\n".join([*parts, "</section>"])
    if s.status in ("changed", "added", "removed"):
        parts.append(_stage_figures(s))
    parts.extend(_split_section(sp) for sp in s.splits.values())
    if s.why:
        heading = ("same data; the manifests differ in" if s.status in SAME_DATA
                   else "Why: the manifest fields that differ")
        parts.append(_why_table(s.why, heading))
    parts.append("</section>")
    return "\n".join(parts)


def _stage_figures(s: StageDiff) -> str:
    from . import plots

    ca, cb = s.counts["a"], s.counts["b"]
    funnel = {side: {"rows in": c["rows_in"], "rows out": c["rows_out"], "dropped": sum(c["dropped"].values())}
              for side, c in (("A", ca), ("B", cb))}
    figures = [_figure(plots.stage_comparison(funnel, title=f"{s.stage}: rows in, out and dropped"),
                       "Before (A) and after (B), from the manifests")]
    if ca["dropped"] or cb["dropped"]:
        figures.append(_figure(plots.drop_reasons({"A": ca["dropped"], "B": cb["dropped"]}),
                               "Rows dropped per reason, whole stage (from the manifests)"))
    return "<div class='figures'>" + "".join(figures) + "</div>"


def _split_section(sp: SplitDiff) -> str:
    head = f"<h3>{_e(sp.split)} split {_badge(sp.status)}</h3>"
    shards = (f"{len(sp.shards_changed)} of {sp.shards_total[0]:,} &rarr; {sp.shards_total[1]:,} shard(s) changed; "
              f"rows {sp.rows_total[0]:,} &rarr; {sp.rows_total[1]:,}")
    if sp.status == "identical":
        return f"{head}<p class='facts'>the same files ({sp.shards_total[0]:,} shard(s), {sp.rows_total[0]:,} rows)</p>"
    if sp.status in ("added", "removed"):
        return f"{head}<p class='facts'>rows {sp.rows_total[0]:,} &rarr; {sp.rows_total[1]:,}</p>"
    if sp.status == "files-only":
        causes = "".join(f"<li>{_e(c)}</li>" for c in sp.file_causes)
        return f"{head}<p class='facts'>{shards}. The rows and their types are the same.</p><ul>{causes}</ul>"
    r = sp.rows
    parts = [head, f"<p class='facts'>{shards}. Matched by id in the changed shards: <b>{r['added']:,}</b> added, "
                   f"<b>{r['removed']:,}</b> removed, <b>{r['changed']:,}</b> changed of {r['compared']:,} "
                   f"present on both sides.</p>",
             _schema_table(sp.schema), _columns_table(r), _id_lists(r), _samples(r["samples"]), _split_figures(sp)]
    return "\n".join(p for p in parts if p)


def _schema_table(schema: dict[str, Any]) -> str:
    rows = ([f"<tr><td><code>{_e(c)}</code></td><td>added</td><td></td><td></td></tr>" for c in schema.get("added", [])]
            + [f"<tr><td><code>{_e(c)}</code></td><td>removed</td><td></td><td></td></tr>"
               for c in schema.get("removed", [])]
            + [f"<tr><td><code>{_e(r['column'])}</code></td><td>retyped</td><td><code>{_e(r['a'])}</code></td>"
               f"<td><code>{_e(r['b'])}</code></td></tr>" for r in schema.get("retyped", [])])
    if not rows:
        return ""
    return ("<h4>Schema changes</h4><table><thead><tr><th>column</th><th>change</th><th>type in A</th>"
            "<th>type in B</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _columns_table(r: dict[str, Any]) -> str:
    if not r["changed_by_column"]:
        reason = ("no row is present on both sides" if not r["compared"]
                  else f"none of the {r['compared']:,} rows present on both sides changed")
        return f"<p class='muted'>Columns with changed rows: none ({reason}).</p>"
    rows = "".join(f"<tr><td><code>{_e(c)}</code></td><td class='num'>{n:,}</td>"
                   f"<td class='num'>{100 * n / r['compared']:.1f}%</td></tr>" for c, n in r["changed_by_column"].items())
    return ("<h4>Columns with changed rows</h4><table><thead><tr><th>column</th><th class='num'>rows changed</th>"
            "<th class='num'>of rows on both sides</th></tr></thead><tbody>" + rows + "</tbody></table>")


def _id_lists(r: dict[str, Any]) -> str:
    out = []
    for kind in ("added", "removed", "changed"):
        ids = r[f"{kind}_ids"]
        if ids:
            more = f" (first {len(ids):,} of {r[kind]:,})" if r[kind] > len(ids) else ""
            out.append(f"<details><summary>{kind} ids{more}</summary><p class='mono'>"
                       + ", ".join(_e(i) for i in ids) + "</p></details>")
    return "".join(out)


def _samples(samples: list[dict[str, Any]]) -> str:
    if not samples:
        return ""
    out = [f"<h4>Changed rows (first {len(samples)})</h4>"]
    for smp in samples:
        rows = "".join(f"<tr><td><code>{_e(ch['column'])}</code></td><td>{_change(ch['a'], ch['b'])}</td></tr>"
                       for ch in smp["changes"])
        out.append(f"<div class='sample'><h4 class='mono'>{_e(smp['id'])}</h4><table>{rows}</table></div>")
    return "".join(out)


def _change(a: Any, b: Any) -> str:
    if isinstance(a, str) and isinstance(b, str):
        return f"<pre class='wdiff'>{word_diff(a, b)}</pre>"
    return (f"<del>{_e(json.dumps(a, ensure_ascii=False))}</del> &rarr; "
            f"<ins>{_e(json.dumps(b, ensure_ascii=False))}</ins>")


def word_diff(a: str, b: str, context: int = 120) -> str:
    """Words removed in <del>, added in <ins>; long unchanged stretches shortened to their ends."""
    ta, tb = re.split(r"(\s+)", a), re.split(r"(\s+)", b)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, ta, tb, autojunk=False).get_opcodes():
        if op == "equal":
            text = "".join(ta[i1:i2])
            if len(text) > 2 * context + 20:
                skipped = len(text) - 2 * context
                out.append(f"{_e(text[:context])}<span class='gap'> [&hellip; {skipped:,} characters &hellip;] </span>"
                           f"{_e(text[-context:])}")
            else:
                out.append(_e(text))
            continue
        if i2 > i1:
            out.append(f"<del>{_e(''.join(ta[i1:i2]))}</del>")
        if j2 > j1:
            out.append(f"<ins>{_e(''.join(tb[j1:j2]))}</ins>")
    return "".join(out)


def _split_figures(sp: SplitDiff) -> str:
    """A plot per column the diff counted, drawn as the figure a stage declares for it (its title and axis) or
    plainly; lengths only where they moved, unless a stage declares the length figure (its texts: always shown)."""
    from ..stages import REGISTRY
    from . import plots

    declared = {(f.column, f.kind): f for stage in REGISTRY for f in stage.figures}
    figures, same = [], []
    for name, st in sp.stats.items():
        series = {"A": st["a"], "B": st["b"]}
        col = st["column"]
        if st["kind"] == "category":
            if col != "drop_reason":  # drop reasons: the stage's figure, from the manifests' complete counts
                figure = declared.get((col, "category"))
                figures.append(_figure(plots.bar_chart(series, title=figure.heading if figure else col,
                                                       xlabel=figure.axis if figure else "rows"),
                                       f"Rows per {col} in the shards read"))
            continue
        counts = {k: v["histogram"] for k, v in series.items()}
        caption = _histogram_caption(st)
        if st["kind"] == "length":
            figure = declared.get((col, "length"))
            if st["a"] == st["b"] and figure is None:
                same.append(name)
                continue
            figures.append(_figure(plots.histogram_chart(
                st["edges"], counts, title=figure.heading if figure else f"Length of {col}",
                xlabel=figure.axis if figure else f"{col} length (characters)"), caption))
            continue
        figure = declared.get((col, "unit")) or declared.get((col, "number"))
        figures.append(_figure(plots.histogram_chart(st["edges"], counts, title=figure.heading if figure else col,
                                                     xlabel=figure.axis if figure else col), caption))
    if not figures:
        return ""
    note = (f"<p class='muted'>The same on both sides: {', '.join(_e(n) for n in same)}.</p>" if same else "")
    return ("<h4>Distributions over the shards read</h4><div class='figures'>" + "".join(figures) + "</div>" + note)


def _histogram_caption(st: dict[str, Any]) -> str:
    def side(v: dict[str, Any]) -> str:
        median = f", median {v['p50']:,.0f}" if "p50" in v else ""
        mean = f"mean {v['mean']:,.3g}" if v["mean"] is not None else "no values"
        return f"{v['n']:,} rows, {mean}{median}"

    return f"A: {side(st['a'])}; B: {side(st['b'])}"


def _figure(image: bytes, caption: str) -> str:
    """An SVG plot as a data: URI, so the page is one file that needs nothing else."""
    data = base64.b64encode(image).decode("ascii")
    return (f"<figure><img alt='{_e(caption)}' src='data:image/svg+xml;base64,{data}'>"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _why_table(why: list[dict[str, Any]], heading: str) -> str:
    return (f"<h3>{_e(heading)}</h3><table><thead><tr><th>field</th><th>A</th><th>B</th></tr></thead><tbody>"
            + "".join(f"<tr><td><code>{_e(w['field'])}</code></td><td class='mono'>{_e(_short(w['a'], 300))}</td>"
                      f"<td class='mono'>{_e(_short(w['b'], 300))}</td></tr>" for w in why) + "</tbody></table>")
