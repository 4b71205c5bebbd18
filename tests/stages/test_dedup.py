"""Exact duplicates of normalised question text, decided globally, kept at the lowest id."""

from __future__ import annotations

import pyarrow as pa
import pytest
from stagekit import make_ctx, make_stage, question

from scalequest_dataset.stages.dedup import build_index, normalize_question, text_ids

SAME = [
    "What is 2 + 2?",
    "what is 2 + 2?",  # case
    "  What   is\t2 +\n2?  ",  # whitespace
    "Ｗhat is 2 + 2？",  # full-width letter and question mark (NFKC)
    "What\u00a0is 2 + 2?",  # no-break space
]

ROWS = [
    question("qwen2-math-qgen-00000003", SAME[0]),
    question("deepseek-qgen-00000007", SAME[1]),
    question("qwen2-math-qgen-00000001", SAME[2]),
    question("deepseek-qgen-00000002", SAME[3]),
    question("qwen2-math-qgen-00000009", SAME[4]),
    question("qwen2-math-qgen-00000004", "What is 2 + 3?"),
    question("deepseek-qgen-00000005", "STRASSE"),
    question("qwen2-math-qgen-00000000", "Straße"),  # case-folds to "strasse"
    question("deepseek-qgen-00000001", "A unique question."),
]
LOWEST = "deepseek-qgen-00000002"  # string order: "deepseek-..." < "qwen2-..."


def batches(rows, size):
    table = pa.Table.from_pylist(rows)
    return table.to_batches(max_chunksize=size)


def dedup(shards: list[list[dict]], batch_size: int = 4):
    stage = make_stage("dedup")
    stage.prepare(iter(batches([r for shard in shards for r in shard], batch_size)))
    ctx, _ = make_ctx(stage)
    kept, dropped = [], []
    for shard in shards:
        result = stage.process(shard, ctx)
        kept += result.rows
        dropped += result.dropped
    return kept, dropped


def test_normalisation_merges_case_whitespace_and_unicode_forms():
    assert len({normalize_question(t) for t in SAME}) == 1
    assert normalize_question("Straße") == normalize_question("STRASSE")
    assert normalize_question("What is 2 + 2?") != normalize_question("What is 2 + 3?")


def test_keeps_the_lowest_id_and_points_to_it():
    kept, dropped = dedup([ROWS])
    assert sorted(r["id"] for r in kept) == sorted(
        [LOWEST, "qwen2-math-qgen-00000004", "deepseek-qgen-00000005", "deepseek-qgen-00000001"])
    assert {r["id"]: r["duplicate_of"] for r in dropped} == {
        "qwen2-math-qgen-00000003": LOWEST, "deepseek-qgen-00000007": LOWEST,
        "qwen2-math-qgen-00000001": LOWEST, "qwen2-math-qgen-00000009": LOWEST,
        "qwen2-math-qgen-00000000": "deepseek-qgen-00000005",
    }
    assert {r["drop_reason"] for r in dropped} == {"duplicate"}  # low cardinality; the pointer is its own column
    assert all(r["query"] for r in dropped)


@pytest.mark.parametrize("cut", [1, 2, 4, 7])
def test_decision_does_not_depend_on_the_shard_cut(cut):
    whole_kept, whole_dropped = dedup([ROWS])
    shards = [ROWS[i : i + cut] for i in range(0, len(ROWS), cut)]
    kept, dropped = dedup(shards, batch_size=cut)
    assert sorted(r["id"] for r in kept) == sorted(r["id"] for r in whole_kept)
    assert sorted((r["id"], r["duplicate_of"]) for r in dropped) == sorted(
        (r["id"], r["duplicate_of"]) for r in whole_dropped)


def test_index_holds_only_duplicated_texts_sorted_by_digest():
    index = build_index([text_ids(batches(ROWS, 3))])
    assert sorted(index["id"].to_pylist()) == [LOWEST, "deepseek-qgen-00000005"]
    assert all(len(digest) == 16 for digest in index["digest"].to_pylist())
    assert index["digest"].to_pylist() == sorted(index["digest"].to_pylist())  # persisted with the plan: stable


def test_a_shard_refuses_to_decide_without_the_global_pass():
    stage = make_stage("dedup")
    ctx, _ = make_ctx(stage)
    with pytest.raises(RuntimeError, match="prepare"):
        stage.process(ROWS[:2], ctx)
