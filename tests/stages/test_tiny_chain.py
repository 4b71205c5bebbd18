"""Stages 3-8 of the `tiny` preset chained by hand on real engines (transformers, builtin:tiny and
builtin:tiny-reward): every stage's rows fit its declared features, and the funnel ends non-empty."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from scalequest_dataset.engines import EnginePool
from scalequest_dataset.recipe.config import resolve_config
from scalequest_dataset.run.files import write_rows
from scalequest_dataset.stages import STAGES, StageContext


def run_chain(tmp_path: Path) -> dict[str, list[dict]]:
    config = resolve_config("tiny")
    pool = EnginePool()

    def get_engine(model, **overrides):
        options = {"dtype": config.engine.dtype, "batch_size": config.engine.batch_size, **overrides}
        return pool.get(config.engine.name, model.path, **options)  # tiny built-ins load from their folder

    ctx = StageContext(config, get_engine)
    outputs: dict[str, list[dict]] = {}
    rows: list[dict] = []
    try:
        for name in config.stage_names():
            stage = STAGES[name](config)
            if name == "questions":
                result = stage.process([r for d in stage.source_plan() for r in stage.source_rows(d)], ctx)
            else:
                stage.prepare(iter(pa.Table.from_pylist(rows).to_batches()))
                result = stage.process(rows, ctx)
            write_rows(tmp_path / name / "train.parquet", result.rows, stage.features)
            if stage.dropped_features is not None:
                write_rows(tmp_path / name / "dropped.parquet", result.dropped, stage.dropped_features)
            outputs[name] = rows = result.rows
    finally:
        pool.close()
    return outputs


def test_tiny_preset_funnel_reaches_default(tmp_path):
    out = run_chain(tmp_path)
    assert len(out["questions"]) == 40
    assert 0 < len(out["solvability"]) < len(out["dedup"])  # the judge filters, but not everything
    assert out["default"], "the tiny preset must end with rows in `default`"
    by_question = {}
    for r in out["reward"]:
        by_question.setdefault(r["question_id"], []).append(r)
    for row in out["default"]:
        best = max(r["reward"] for r in by_question[row["id"]])
        assert row["reward"] == best and row["n_candidates"] == len(by_question[row["id"]])
