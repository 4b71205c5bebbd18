"""The funnel of a run: rows in and out of every stage, with drop reasons (from the manifests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .storage import read_json


def funnel(run_dir: Path, stages: list[str]) -> list[dict[str, Any]]:
    out = []
    for stage in stages:
        path = Path(run_dir) / "manifests" / f"{stage}.json"
        if path.exists():
            m = read_json(path)
            out.append({"stage": stage, **m["counts"], "tokens": m["cost"]["tokens"], "seconds": m["cost"]["seconds"]})
    return out


def format_funnel(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'stage':<12} {'rows in':>9} {'rows out':>9} {'kept':>6}  {'tokens':>9} {'seconds':>8}  dropped"]
    for r in rows:
        kept = f"{100 * r['rows_out'] / r['rows_in']:.0f}%" if r["rows_in"] else "-"
        drops = ", ".join(f"{k}: {v}" for k, v in r["dropped"].items()) or "-"
        lines.append(f"{r['stage']:<12} {r['rows_in']:>9} {r['rows_out']:>9} {kept:>6}  {r['tokens']:>9} "
                     f"{r['seconds']:>8.1f}  {drops}")
    return "\n".join(lines)
