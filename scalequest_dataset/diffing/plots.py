"""Figures for the diff report and the dataset card, drawn with matplotlib from plain numbers.

Every function takes counts or histograms (no manifests, no tables) and returns the figure as PNG or SVG
bytes. The same input gives the same bytes: a fixed size and DPI, matplotlib's built-in style whatever
the user's matplotlibrc says, no date or software version in the file's metadata, fixed SVG ids, text as
paths. Nothing is shown: figures are drawn off screen on the Agg canvas, without pyplot.

Series are `{label: values}`: one label for one version (the card), two ("A", "B") for a diff.

    funnel_chart(rows)                         rows in and out of every stage, one version
    funnel_comparison(rows_a, rows_b)          rows out of every stage, A beside B
    stage_comparison({"A": {...}, "B": {...}}) one stage: rows in, rows out, dropped, A beside B
    histogram_chart(edges, {label: counts})    any pre-binned histogram; bin_values() bins raw values
    bar_chart({label: {category: n}})          categories; drop_reasons labels it for the drop reasons

What a column's plot is titled and labelled is its stage's to say (`stages.base.Figure`), not this module's.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, StrMethodFormatter

Format = Literal["svg", "png"]
Histogram = Mapping[str, Sequence[float]]  # label -> one count per bucket
Counts = Mapping[str, Mapping[str, float]]  # label -> category -> count

WIDTH, HEIGHT, DPI = 5.6, 2.9, 100  # inches, inches, dots per inch: 560 x 290 pixels in PNG
COLORS = ("#4878d0", "#ee854a", "#6acc64", "#d65f5f", "#956cb4", "#8c613c")  # seaborn "muted": colour-blind safe
METADATA = {"svg": {"Date": None, "Creator": None}, "png": {"Software": None}}
_STYLE = {
    "svg.hashsalt": "scalequest",  # SVG ids from a fixed salt, not from a random one
    "svg.fonttype": "path",  # glyphs as paths: the picture does not depend on the viewer's fonts
    "font.family": "DejaVu Sans",  # shipped with matplotlib, so present everywhere
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "axes.axisbelow": True,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "legend.frameon": False,
}


@contextmanager
def _style() -> Iterator[None]:
    """matplotlib's built-in defaults plus ours, whatever the user's matplotlibrc sets."""
    defaults = {k: v for k, v in matplotlib.rcParamsDefault.items()
                if not k.startswith(("backend", "interactive", "savefig.directory"))}
    with matplotlib.rc_context({**defaults, **_STYLE}):
        yield


def _figure(height: float = HEIGHT, labels: Sequence[str] = ()) -> Figure:
    """A figure with margins set from what they must hold: a layout engine would cost 3x the drawing.
    `labels`: the y tick labels, whose longest sets the left margin."""
    fig = Figure(figsize=(WIDTH, height), dpi=DPI)
    FigureCanvasAgg(fig)  # off-screen raster canvas; SVG output uses matplotlib's SVG writer
    left = 0.75 if not labels else 0.3 + 0.068 * max(len(str(x)) for x in labels)  # inches; ~0.068 in per 9 pt char
    fig.subplots_adjust(left=min(left, WIDTH / 2) / WIDTH, right=1 - 0.45 / WIDTH, bottom=0.5 / height,
                        top=1 - 0.32 / height)
    return fig


def _save(fig: Figure, fmt: Format) -> bytes:
    if fmt not in METADATA:
        raise ValueError(f"format must be 'svg' or 'png', not {fmt!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=DPI, metadata=METADATA[fmt])
    return buf.getvalue()


def _count_axis(axis: Any) -> None:
    axis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    axis.set_major_locator(MaxNLocator(nbins=6, integer=True))


def _legend(ax: Any, series: int) -> None:
    if series > 1:
        ax.legend(loc="best", fontsize=8)


# ---------------------------------------------------------------------------------------------- funnels


def funnel_chart(stages: Sequence[Mapping[str, Any]], *, title: str = "Rows through the pipeline",
                 fmt: Format = "svg") -> bytes:
    """One version's funnel: each stage's rows in (light) and rows out (dark), first stage on top.

    `stages`: `{"stage": name, "rows_in": n, "rows_out": m}` in pipeline order, as `funnel.funnel()` gives."""
    names = [str(s["stage"]) for s in stages]
    y = np.arange(len(names))
    with _style():
        fig = _figure(max(2.0, 0.9 + 0.42 * len(names)), names)
        ax = fig.add_subplot()
        ax.barh(y, [s["rows_in"] for s in stages], height=0.8, color="#c9d6f2", label="rows in")
        bars = ax.barh(y, [s["rows_out"] for s in stages], height=0.5, color=COLORS[0], label="rows out")
        ax.bar_label(bars, labels=[f"{s['rows_out']:,}" for s in stages], padding=3, fontsize=8)
        _stage_axis(ax, names, y)
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)
        return _save(fig, fmt)


def funnel_comparison(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]],
                      labels: tuple[str, str] = ("A", "B"), *, title: str = "Rows out of every stage",
                      fmt: Format = "svg") -> bytes:
    """Two versions' funnels, rows out per stage, A beside B (a stage missing on one side counts 0)."""
    out = {label: {str(s["stage"]): s["rows_out"] for s in side} for label, side in zip(labels, (a, b), strict=True)}
    names = list(dict.fromkeys([str(s["stage"]) for s in (*a, *b)]))
    return _grouped_barh(names, {k: [v.get(n, 0) for n in names] for k, v in out.items()}, title=title,
                         xlabel="rows out", fmt=fmt)


def stage_comparison(counts: Mapping[str, Mapping[str, float]], *, title: str = "Rows in, out and dropped",
                     fmt: Format = "svg") -> bytes:
    """One stage in two versions: `{"A": {"rows in": n, "rows out": m, "dropped": k}, "B": {...}}`."""
    return bar_chart(counts, title=title, xlabel="rows", fmt=fmt)


def _stage_axis(ax: Any, names: list[str], y: np.ndarray) -> None:
    ax.set_yticks(y, names)
    ax.invert_yaxis()  # pipeline order reads top to bottom
    ax.set_xlabel("rows")
    ax.grid(axis="y", visible=False)
    _count_axis(ax.xaxis)
    ax.margins(x=0.12)  # room for the value labels


# ---------------------------------------------------------------------------------------------- histograms


def bin_values(values: Mapping[str, Sequence[float]], bins: int = 20,
               value_range: tuple[float, float] | None = None) -> tuple[list[float], dict[str, list[int]]]:
    """Raw values of each series into the same buckets: `(edges, {label: counts})`. Non-finite values are
    left out. For streams, bin each chunk with a fixed `value_range` and add the counts."""
    arrays = {k: np.asarray(v, dtype=float) for k, v in values.items()}
    arrays = {k: v[np.isfinite(v)] for k, v in arrays.items()}
    if value_range is None:
        both = np.concatenate([*arrays.values(), np.array([])])
        lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
        value_range = (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)  # one value: a bucket centred on it
    edges = np.linspace(value_range[0], value_range[1], bins + 1)
    return edges.tolist(), {k: np.histogram(v, edges)[0].tolist() for k, v in arrays.items()}


def histogram_chart(edges: Sequence[float], counts: Histogram, *, title: str, xlabel: str, ylabel: str = "rows",
                    fmt: Format = "svg") -> bytes:
    """Pre-binned histograms over the same `edges` (len(counts[label]) == len(edges) - 1), overlaid."""
    with _style():
        fig = _figure()
        ax = fig.add_subplot()
        for i, (label, values) in enumerate(counts.items()):
            color = COLORS[i % len(COLORS)]
            ax.stairs(values, edges, fill=True, alpha=0.25, color=color)
            ax.stairs(values, edges, linewidth=1.6, color=color, label=f"{label} (n={int(sum(values)):,})")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        _count_axis(ax.yaxis)
        ax.set_ylim(bottom=0)
        ax.legend(loc="best", fontsize=8)
        return _save(fig, fmt)


# ---------------------------------------------------------------------------------------------- categories


def bar_chart(counts: Counts, *, title: str, xlabel: str = "rows", fmt: Format = "svg") -> bytes:
    """Horizontal bars per category (the union over series, in first-seen order), series side by side."""
    names = list(dict.fromkeys(c for series in counts.values() for c in series))
    return _grouped_barh(names, {label: [series.get(n, 0) for n in names] for label, series in counts.items()},
                         title=title, xlabel=xlabel, fmt=fmt)


def drop_reasons(counts: Counts, *, fmt: Format = "svg") -> bytes:
    """Rows dropped per reason: `{label: {reason: rows}}`."""
    return bar_chart(counts, title="Drop reasons", xlabel="rows dropped", fmt=fmt)


def _grouped_barh(names: list[str], series: Mapping[str, Sequence[float]], *, title: str, xlabel: str,
                  fmt: Format) -> bytes:
    y = np.arange(len(names))
    k = max(1, len(series))
    height = 0.8 / k
    with _style():
        fig = _figure(max(2.0, 0.9 + (0.3 + 0.16 * k) * max(1, len(names))), names)
        ax = fig.add_subplot()
        for i, (label, values) in enumerate(series.items()):
            bars = ax.barh(y - 0.4 + height * (i + 0.5), values, height=height * 0.92,
                           color=COLORS[i % len(COLORS)], label=label)
            ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3, fontsize=8)
        _stage_axis(ax, names, y)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        if not names:
            ax.text(0.5, 0.5, "no rows", transform=ax.transAxes, ha="center", va="center", color="#888888")
        _legend(ax, len(series))
        return _save(fig, fmt)
