"""Decontamination on local benchmark files (the Hub path is tests/stages/test_decontamination_hub.py): the
normalisation, the n-gram window, the Table 6 report, both modes, and decisions that depend on nothing but
the rows - checked against a brute-force oracle."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from decontamkit import GSM, MATH, MATH500, QUESTIONS, clean_ratio, oracle, q, write_jsonl
from stagekit import make_ctx, make_stage

from scalequest_dataset.recipe.params import ConfigError
from scalequest_dataset.run.files import write_table
from scalequest_dataset.stages import decontamination as dc
from scalequest_dataset.stages.decontamination import read_report, words


@pytest.fixture
def bench_files(tmp_path: Path) -> dict[str, Path]:
    return {"gsm": write_jsonl(tmp_path / "gsm.jsonl", [{"question": t, "answer": "42"} for t in GSM]),
            "math": write_jsonl(tmp_path / "math.jsonl", [{"problem": t} for t in MATH]),
            "math500": write_jsonl(tmp_path / "math500.jsonl",
                                   [{"problem": t, "unique_id": f"test/geometry/{i}.json"} for i, t in enumerate(MATH500)])}


def section(files: dict[str, Path], **extra) -> dict:
    return {"benchmarks": [
        {"name": "gsm", "path": str(files["gsm"]), "columns": ["question"]},
        {"name": "math", "path": str(files["math"]), "columns": ["problem"]},
        {"name": "math500", "path": str(files["math500"]), "columns": ["problem"], "id_column": "unique_id"}],
        **extra}


def run(files, rows=QUESTIONS, cuts=(), batch=4, **extra):
    """prepare over the whole input (in batches of `batch`), then process the shards cut at `cuts`."""
    stage = make_stage("decontamination", section(files, **extra))
    prepared = stage.prepare(pa.Table.from_pylist(rows).to_batches(max_chunksize=batch))
    ctx, _ = make_ctx(stage)
    kept, dropped, start = [], [], 0
    for stop in [*cuts, len(rows)]:
        result = stage.process(rows[start:stop], ctx)
        kept, dropped, start = kept + result.rows, dropped + result.dropped, stop
    return stage, prepared, kept, dropped


def bench_items():
    return [("gsm", [(str(i), [t]) for i, t in enumerate(GSM)]),
            ("math", [(str(i), [t]) for i, t in enumerate(MATH)]),
            ("math500", [(f"test/geometry/{i}.json", [t]) for i, t in enumerate(MATH500)])]


def test_normalisation_is_one_function_for_both_sides():
    assert words("Ｎatalia SOLD clips, to 48!") == ["natalia", "sold", "clips", "to", "48"]  # NFKC, case
    assert words("Let $f(x)=3x^2-5x$.") == ["let", "f", "x", "3x", "2", "5x"]  # punctuation and LaTeX split
    assert words("Straße") == words("STRASSE") and words(None) == []


def test_finds_what_the_brute_force_oracle_finds(bench_files):
    _, _, kept, _ = run(bench_files)
    expected = oracle({r["id"]: r["query"] for r in QUESTIONS}, bench_items(), 13)
    found = {r["id"]: r["contamination_benchmarks"] for r in kept if r["contamination_benchmark"]}
    assert found == {qid: sorted({b for b, _ in pairs}, key=["gsm", "math", "math500"].index)
                     for qid, pairs in expected.items()}
    assert set(found) == {q(i, "")["id"] for i in (1, 2, 4, 6, 7)}


def test_the_window_is_n_words_not_n_minus_one(bench_files):
    _, _, kept, _ = run(bench_files)
    by_id = {r["id"]: r for r in kept}
    assert by_id[q(2, "")["id"]]["contamination_ngram"] == " ".join(words(GSM[0])[1:14])  # exactly 13 words
    assert by_id[q(3, "")["id"]]["contamination_benchmark"] is None  # 12 of them are not enough
    _, _, kept12, _ = run(bench_files, ngram=12)
    assert {r["id"]: r["contamination_benchmark"] for r in kept12}[q(3, "")["id"]] == "gsm"  # n is configurable


def test_columns_name_the_first_benchmark_its_item_and_every_benchmark(bench_files):
    _, _, kept, _ = run(bench_files)
    row = {r["id"]: r for r in kept}[q(4, "")["id"]]  # MATH item 1, which MATH-500 holds too
    assert (row["contamination_benchmark"], row["contamination_item"]) == ("math", "1")
    assert row["contamination_benchmarks"] == ["math", "math500"]
    assert row["contamination_ngram"] == "find the area of a triangle whose vertices are the points 0 0"
    clean = {r["id"]: r for r in kept}[q(5, "")["id"]]
    assert [clean[c] for c in dc.CONTAMINATION_COLUMNS] == [None] * 4


def test_report_is_the_papers_table_6(bench_files):
    stage, prepared, _, _ = run(bench_files)
    report = read_report(prepared)
    assert report == stage.report
    assert (report["ngram"], report["questions"], report["contaminated"]) == (13, 7, 5)
    gsm, math, math500 = report["benchmarks"]
    found = oracle({r["id"]: r["query"] for r in QUESTIONS}, bench_items(), 13)
    assert (gsm["items"], gsm["clean"], gsm["short_items"]) == (3, 1, 1)
    assert gsm["clean_ratio"] == clean_ratio(found, "gsm", 3) == 1 / 3
    assert gsm["matched"] == [{"item": "0", "questions": 3, "first": q(1, "")["id"]},
                              {"item": "1", "questions": 1, "first": q(6, "")["id"]}]
    assert (math["clean_ratio"], math500["clean_ratio"]) == (0.5, 0.0)
    assert math500["matched"] == [{"item": "test/geometry/0.json", "questions": 1, "first": q(4, "")["id"]}]
    assert gsm["revision"] == "sha256:" + hashlib.sha256(bench_files["gsm"].read_bytes()).hexdigest()
    assert gsm["source"] == f"file:{bench_files['gsm']}" and gsm["questions"] == 4


def test_report_mode_keeps_every_row_and_remove_mode_drops_with_reasons(bench_files):
    _, _, kept, dropped = run(bench_files)
    assert len(kept) == len(QUESTIONS) and not dropped
    _, _, kept, dropped = run(bench_files, mode="remove")
    assert sorted(r["id"] for r in kept) == [q(3, "")["id"], q(5, "")["id"]]
    assert {r["drop_reason"] for r in dropped} == {"contaminated"}
    row = {r["id"]: r for r in dropped}[q(6, "")["id"]]
    assert (row["contamination_benchmark"], row["contamination_item"]) == ("gsm", "1")
    assert row["contamination_ngram"] == " ".join(words(GSM[1])[:13])
    assert row["drop_detail"] == "shares a 13-gram with gsm item 1"


@pytest.mark.parametrize(("cuts", "batch"), [((1, 2, 3, 4, 5, 6), 1), ((2, 4, 6), 2), ((3,), 3), ((), 7)])
def test_decisions_and_prepared_bytes_do_not_depend_on_cuts_or_batches(bench_files, tmp_path, cuts, batch):
    _, ref_table, ref_kept, ref_dropped = run(bench_files, mode="remove")
    _, table, kept, dropped = run(bench_files, cuts=cuts, batch=batch, mode="remove")
    key = lambda rows: sorted(rows, key=lambda r: r["id"])  # noqa: E731
    assert key(kept) == key(ref_kept) and key(dropped) == key(ref_dropped)
    a = write_table(tmp_path / "a.parquet", ref_table)
    b = write_table(tmp_path / "b.parquet", table)
    assert a["sha256"] == b["sha256"]


def test_windows_never_span_two_questions_or_two_columns(tmp_path):
    text = " ".join(f"w{i}" for i in range(13))
    files = {"gsm": write_jsonl(tmp_path / "g.jsonl", [{"question": text, "answer": ""}]),
             "math": write_jsonl(tmp_path / "m.jsonl", [{"problem": "w0 w1 w2 w3 w4 w5",
                                                         "extra": "w6 w7 w8 w9 w10 w11 w12"}])}
    rows = [q(1, "w0 w1 w2 w3 w4 w5"), q(2, "w6 w7 w8 w9 w10 w11 w12"), q(3, text)]
    stage = make_stage("decontamination", {"benchmarks": [
        {"name": "gsm", "path": str(files["gsm"]), "columns": ["question"]},
        {"name": "math", "path": str(files["math"]), "columns": ["problem", "extra"]}]})
    stage.prepare(pa.Table.from_pylist(rows).to_batches())  # q1 and q2 in one batch: their words are adjacent
    assert set(stage.matches) == {q(3, "")["id"]}
    assert stage.matches[q(3, "")["id"]]["benchmarks"] == ["gsm"]  # math's 13 words are in two columns


def test_a_hash_collision_is_never_a_match(bench_files, monkeypatch):
    # Every n-gram hashes alike: each window is a candidate, and only the word-for-word check decides.
    monkeypatch.setattr(dc, "ngram_hashes", lambda h, n: np.zeros(max(len(h) - n + 1, 0), dtype=np.uint64))
    _, _, kept, _ = run(bench_files)
    expected = oracle({r["id"]: r["query"] for r in QUESTIONS}, bench_items(), 13)
    assert {r["id"] for r in kept if r["contamination_benchmark"]} == set(expected)


def test_a_worker_decides_from_the_persisted_table_alone(bench_files, tmp_path):
    planner, prepared, kept, dropped = run(bench_files, mode="remove")
    write_table(tmp_path / "prepared.parquet", prepared)
    worker = make_stage("decontamination", section(bench_files, mode="remove"))
    bench_files["gsm"].unlink()  # the worker never reads a benchmark
    worker.load_prepared(pq.read_table(tmp_path / "prepared.parquet"))
    ctx, _ = make_ctx(worker)
    result = worker.process(QUESTIONS, ctx)
    assert (result.rows, result.dropped) == (kept, dropped)
    assert worker.report == planner.report


def test_benchmarks_are_pinned_like_models(bench_files):
    stage = make_stage("decontamination", section(bench_files))
    pinned = stage.models()
    assert list(pinned) == ["benchmark:gsm", "benchmark:math", "benchmark:math500"]
    assert pinned["benchmark:gsm"].id == f"file:{bench_files['gsm']}"
    assert pinned["benchmark:gsm"].revision.startswith("sha256:")
    before = stage.fingerprint(None, None)
    bench_files["gsm"].write_text(bench_files["gsm"].read_text() + '{"question": "one more"}\n')
    assert make_stage("decontamination", section(bench_files)).fingerprint(None, None) != before
    with pytest.raises(ConfigError, match="was planned with"):  # a file changed after planning is refused
        stage.prepare(iter([]))


def test_a_shard_refuses_to_decide_without_the_global_pass(bench_files):
    stage = make_stage("decontamination", section(bench_files))
    ctx, _ = make_ctx(stage)
    with pytest.raises(RuntimeError, match="prepare"):
        stage.process(QUESTIONS[:1], ctx)


@pytest.mark.parametrize(("benchmark", "needle"), [
    ({"name": "x", "repo": "a/b", "path": "x.jsonl", "columns": ["q"]}, "exactly one of"),
    ({"name": "x", "path": "x.jsonl", "revision": "main", "columns": ["q"]}, "no `revision`"),
    ({"name": "x", "path": "x.csv", "columns": ["q"]}, "must end in"),
    ({"name": "x", "repo": "a/b", "columns": []}, "at least 1"),
])
def test_bad_benchmark_specs_are_config_errors(benchmark, needle):
    with pytest.raises(ConfigError, match=needle):
        make_stage("decontamination", {"benchmarks": [benchmark]})


def test_duplicate_names_and_missing_columns_are_named(bench_files):
    spec = {"name": "gsm", "path": str(bench_files["gsm"]), "columns": ["question"]}
    with pytest.raises(ConfigError, match="unique"):
        make_stage("decontamination", {"benchmarks": [spec, spec]})
    stage = make_stage("decontamination", {"benchmarks": [{**spec, "columns": ["problem"]}]})
    with pytest.raises(ConfigError, match="no column problem"):
        stage.prepare(iter([]))


BOILER = "If the answer is not a whole number, express your answer as a common fraction in lowest terms."


def _boilerplate_run(tmp_path, questions: int, **extra):
    """200 benchmark items that all end in the same 17-word boilerplate; every question ends in it too, and
    question 0 also copies item 7's own words."""
    items = [{"problem": f"Item {k} asks for the number of ways to color {k} beads on a necklace of size {k + 3} "
                         f"using red blue and green paint only. {BOILER}"} for k in range(200)]
    files = {"math": write_jsonl(tmp_path / "boiler.jsonl", items)}
    rows = [q(i, f"Question {i} about {i % 17} apples. {BOILER}") for i in range(questions)]
    rows[0] = q(0, items[7]["problem"])
    stage = make_stage("decontamination", {"benchmarks": [
        {"name": "math", "path": str(files["math"]), "columns": ["problem"]}], **extra})
    prepared = stage.prepare(pa.Table.from_pylist(rows).to_batches(max_chunksize=1000))
    return stage, read_report(prepared)


def test_an_ngram_shared_by_many_items_is_boilerplate_and_flags_nothing(tmp_path):
    stage, report = _boilerplate_run(tmp_path, 50)
    assert set(stage.matches) == {q(0, "")["id"]}  # the copied item, not the boilerplate
    assert stage.matches[q(0, "")["id"]]["item"] == "7"
    assert report["boilerplate"]["ngrams"] >= 5 and report["boilerplate"]["max_items_per_ngram"] == 32
    assert any("express your answer as a common fraction" in g for g in report["boilerplate"]["examples"])
    assert report["benchmarks"][0]["matched"] == [{"item": "7", "questions": 1, "first": q(0, "")["id"]}]
    # The cap decides: raised above the item count, the boilerplate flags every question (the paper's measure).
    stage, report = _boilerplate_run(tmp_path, 50, max_items_per_ngram=1000)
    assert len(stage.matches) == 50 and report["boilerplate"]["ngrams"] == 0


def test_memory_stays_flat_under_heavy_overlap(tmp_path):
    """Even with the cap lifted (each of 1,000 questions in one batch hits 200 items at 5 positions), a question's
    hits are reduced as they arrive: no object per (position x item) for a whole batch (that held ~1M objects,
    ~100 MB, here; 2.0 GB at 8.5k questions of the paper's size)."""
    import tracemalloc

    tracemalloc.start()
    stage, _ = _boilerplate_run(tmp_path, 1000, max_items_per_ngram=1000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(stage.matches) == 1000
    assert peak < 16 << 20, f"{peak / 2**20:.1f} MiB"
