"""The pictures of the published card: PNG files committed with a stage, referenced from README.md.

- `images/funnel.png` and `images/drop-reasons.png` come from the manifests alone (counts), so every stage's
  commit redraws them for the stages the branch then holds;
- `images/<stage>/<figure>.png` come from the stage's own shards, drawn once when the stage is published: the
  figures the stage declares (`Stage.figures`: a column drawn as lengths, a histogram or category counts, with
  its labels); kept rows beside dropped ones where the stage drops them.

A stage is never read whole: each shard is streamed in record batches of the one column a figure needs, and
binned as it goes - lengths into exact per-length counts (memory bounded by the longest text), scores in [0, 1]
into fixed buckets, other numbers (rewards) into buckets between the minimum and maximum that the Parquet
footers' statistics give. The same data gives the same bytes (`plots` guarantees it for the same numbers), so
re-publishing identical data changes no image."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..run.funnel import funnel
from ..run.records import Manifest
from ..stages import STAGES
from ..stages.base import Figure
from .stores.base import RepoLayout

IMAGES = RepoLayout.IMAGES
BINS = 20
BATCH_ROWS = 8192


def figure_path(stage: str, figure: Figure) -> str:
    return f"{IMAGES}/{stage}/{figure.name}.png"


OVERVIEW = {f"{IMAGES}/funnel.png": "Rows in and out of every stage",
            f"{IMAGES}/drop-reasons.png": "Rows dropped, by stage and reason"}


# ---------------------------------------------------------------------------------------------- drawing


def overview_figures(manifests: Mapping[str, Manifest]) -> dict[str, bytes]:
    """The funnel and the drop reasons of every stage the branch holds, from the manifests."""
    from ..diffing import plots

    rows = funnel(dict(manifests))
    figures = {f"{IMAGES}/funnel.png": plots.funnel_chart(
        [{"stage": _stage_label(r.stage, r.unit_in, r.unit_out), "rows_in": r.rows_in, "rows_out": r.rows_out}
         for r in rows], fmt="png")}
    drops = {f"{r.stage}: {reason}": n for r in rows for reason, n in r.dropped.items() if n}
    if drops:
        figures[f"{IMAGES}/drop-reasons.png"] = plots.drop_reasons({"rows dropped": drops}, fmt="png")
    return figures


def _stage_label(stage: str, unit_in: str, unit_out: str) -> str:
    """A stage whose rows change unit says so: 25 questions in, 27 responses out is not 108% kept."""
    return stage if unit_in == unit_out else f"{stage} ({unit_in}s → {unit_out}s)"


def stage_figures(stage: str, files: Mapping[str, Iterable[Path]]) -> dict[str, bytes]:
    """The stage's own pictures (`images/<stage>/*.png`) from its shards, `files` by split ("train", "dropped")."""
    files = {split: list(paths) for split, paths in files.items()}
    out = {}
    for figure in STAGES[stage].figures:
        series = {_series(split): files[split] for split in ("train", "dropped")
                  if files.get(split) and _rows(files[split], figure.column)}
        if series:
            out[figure_path(stage, figure)] = _draw(figure, series)
    return out


def _series(split: str) -> str:
    return {"train": "kept", "dropped": "dropped"}[split]


def _draw(figure: Figure, series: dict[str, list[Path]]) -> bytes:
    from ..diffing import plots  # matplotlib: only when drawing

    if figure.kind == "category":
        return plots.bar_chart({label: category_counts(paths, figure.column) for label, paths in series.items()},
                               title=figure.heading, xlabel=figure.axis, fmt="png")
    if figure.kind == "length":
        edges, counts = length_histogram(series, figure.column)
        return plots.histogram_chart(edges, counts, title=figure.heading, xlabel=figure.axis, fmt="png")
    value_range = (0.0, 1.0) if figure.kind == "unit" else statistics_range(
        [p for paths in series.values() for p in paths], figure.column)
    edges = np.linspace(value_range[0], value_range[1], BINS + 1)
    counts = {label: number_histogram(paths, figure.column, edges) for label, paths in series.items()}
    return plots.histogram_chart(edges.tolist(), counts, title=figure.heading, xlabel=figure.axis, fmt="png")


# ---------------------------------------------------------------------------------------------- streaming


def batches(paths: Iterable[Path], column: str) -> Iterator[pa.Array]:
    """The non-null values of one column, record batch by record batch, shard by shard."""
    for path in paths:
        parquet = pq.ParquetFile(path)
        if column not in parquet.schema_arrow.names:
            continue
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=[column]):
            values = batch.column(0)
            if pa.types.is_dictionary(values.type):
                values = values.cast(values.type.value_type)
            yield pc.drop_null(values)


def _rows(paths: list[Path], column: str) -> bool:
    """Whether any shard has a non-null value in the column (read from the footers: no data)."""
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        names = meta.schema.to_arrow_schema().names
        if column not in names:
            continue
        index = names.index(column)
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(index).statistics
            rows = meta.row_group(g).num_rows
            if stats is None or not stats.has_null_count or stats.null_count < rows:
                return True
    return False


def length_histogram(series: Mapping[str, list[Path]], column: str) -> tuple[list[float], dict[str, list[int]]]:
    """Character lengths binned over [0, longest]: exact counts per length first (one integer per distinct
    length, whatever the row count), then the same buckets for every series."""
    per_length: dict[str, np.ndarray] = {}
    for label, paths in series.items():
        counts = np.zeros(0, dtype=np.int64)
        for values in batches(paths, column):
            lengths = pc.utf8_length(values).to_numpy(zero_copy_only=False)
            if lengths.size:
                batch = np.bincount(lengths)
                if batch.size > counts.size:
                    counts = np.pad(counts, (0, batch.size - counts.size))
                counts[: batch.size] += batch
        per_length[label] = counts
    longest = max((c.size - 1 for c in per_length.values()), default=0)
    edges = np.linspace(0, max(longest, 1), BINS + 1)
    return edges.tolist(), {label: np.histogram(np.arange(c.size), edges, weights=c)[0].astype(int).tolist()
                            for label, c in per_length.items()}


def statistics_range(paths: list[Path], column: str) -> tuple[float, float]:
    """The column's minimum and maximum from the Parquet footers' statistics (one pass over the data only when a
    writer left them out); a single value gets a bucket centred on it."""
    lo, hi = np.inf, -np.inf
    for path in paths:
        meta = pq.ParquetFile(path).metadata
        names = meta.schema.to_arrow_schema().names
        if column not in names:
            continue
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(names.index(column)).statistics
            if stats is None or not stats.has_min_max:
                return _scanned_range(paths, column)
            lo, hi = min(lo, float(stats.min)), max(hi, float(stats.max))
    return _centred(lo, hi)


def _scanned_range(paths: list[Path], column: str) -> tuple[float, float]:
    lo, hi = np.inf, -np.inf
    for values in batches(paths, column):
        finite = _finite(values)
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return _centred(lo, hi)


def _centred(lo: float, hi: float) -> tuple[float, float]:
    if not np.isfinite(lo) or not np.isfinite(hi):
        return 0.0, 1.0
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _finite(values: pa.Array) -> np.ndarray:
    array = values.to_numpy(zero_copy_only=False).astype(float)
    return array[np.isfinite(array)]


def number_histogram(paths: list[Path], column: str, edges: np.ndarray) -> list[int]:
    """Counts over fixed `edges`; a value outside them (a score a hair above 1) goes to the nearest end bucket."""
    counts = np.zeros(len(edges) - 1, dtype=np.int64)
    for values in batches(paths, column):
        counts += np.histogram(np.clip(_finite(values), edges[0], edges[-1]), edges)[0]
    return counts.tolist()


def category_counts(paths: list[Path], column: str) -> dict[str, int]:
    """Rows per value, most frequent first (ties by name, so the order never depends on the shards' order)."""
    counts: dict[str, int] = {}
    for values in batches(paths, column):
        for item in pc.value_counts(values).to_pylist():
            key = str(item["values"])
            counts[key] = counts.get(key, 0) + item["counts"]
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


# ---------------------------------------------------------------------------------------------- the card


def card_figures(manifests: Mapping[str, Manifest], images: Iterable[str]) -> list[dict[str, Any]]:
    """What the card's Figures section shows: the overview pictures, then each stage's, for the images the
    revision holds (paths relative to the repository root, so the links work on the Hub and in a clone)."""
    present = set(images)
    sections: list[dict[str, Any]] = []
    overview = [{"path": p, "alt": alt} for p, alt in OVERVIEW.items() if p in present]
    if overview:
        sections.append({"stage": None, "images": overview})
    for stage in manifests:
        shown = [{"path": figure_path(stage, f), "alt": f"{stage}: {f.title}"} for f in STAGES[stage].figures
                 if figure_path(stage, f) in present]
        if shown:
            sections.append({"stage": stage, "images": shown})
    return sections


def is_stage_image(path: str, stage: str) -> bool:
    return path.startswith(f"{IMAGES}/{stage}/")
