"""The whole-input passes at plan time on several processes (run/prepare.py): the prepared table is byte for byte
the one pass over the whole input, for dedup (duplicates across the parts) and decontamination (overlaps and
first ids across the parts), and the passes really ran elsewhere (their CPU comes back)."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))

from decontamkit import GSM, MATH, MATH500, QUESTIONS, q, write_jsonl
from stagekit import make_stage

from scalequest_dataset.run import prepare as prep
from scalequest_dataset.run.backends.local import LocalBackend


def table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def input_files(tmp_path: Path, rows: list[dict], sizes: list[int]) -> tuple[list[Path], list[int]]:
    paths, start = [], 0
    for i, n in enumerate(sizes):
        path = tmp_path / f"train-{i:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows[start : start + n]), path)
        paths.append(path)
        start += n
    assert start == len(rows)
    return paths, sizes


@pytest.fixture
def in_parts(monkeypatch):
    monkeypatch.setattr(prep, "MIN_ROWS_PER_PROCESS", 1)  # parallel even for a handful of rows


def both(stage_factory, paths, rows, processes):
    whole = stage_factory().prepare(prep.iter_batches(paths))
    stage = stage_factory()
    parted, elsewhere = prep.prepare_input(stage, paths, rows, processes)
    return whole, parted, elsewhere, stage


def test_dedup_in_parts_is_the_whole_pass(tmp_path, in_parts):
    texts = ["What is 2+2?", "what  is 2+2?", "Find x.", "A new one", "FIND X.", "What is 2+2?", "Other", "find x."]
    rows = [q(i, t) for i, t in enumerate(texts)]
    rows.reverse()  # the lowest id of a text comes last: a part that kept its own first would be wrong
    paths, sizes = input_files(tmp_path, rows, [3, 2, 3])
    whole, parted, elsewhere, stage = both(lambda: make_stage("dedup"), paths, sizes, 3)
    assert table_bytes(parted) == table_bytes(whole)
    assert sorted(whole["id"].to_pylist()) == ["deepseek-qgen-00000000", "deepseek-qgen-00000002"]
    assert elsewhere > 0  # the parts ran in other processes
    assert stage.kept_ids is not None and len(stage.kept_ids) == 2  # loaded, as after `prepare`


def test_decontamination_in_parts_is_the_whole_pass(tmp_path, in_parts):
    files = {"gsm": write_jsonl(tmp_path / "gsm.jsonl", [{"question": t, "answer": "42"} for t in GSM]),
             "math": write_jsonl(tmp_path / "math.jsonl", [{"problem": t} for t in MATH]),
             "math500": write_jsonl(tmp_path / "math500.jsonl", [{"problem": t} for t in MATH500])}
    section = {"benchmarks": [{"name": n, "path": str(p), "columns": ["question" if n == "gsm" else "problem"]}
                              for n, p in files.items()]}
    # the same benchmark items matched from every part, the lowest matching id in the last part
    rows = list(reversed(QUESTIONS)) + list(QUESTIONS[:3])
    rows = [dict(r, id=f"{r['id']}-{k}") for k, r in enumerate(rows)]
    paths, sizes = input_files(tmp_path, rows, [len(rows) // 3, len(rows) // 3, len(rows) - 2 * (len(rows) // 3)])
    whole, parted, elsewhere, stage = both(lambda: make_stage("decontamination", section), paths, sizes, 3)
    assert whole.num_rows >= 3 and table_bytes(parted) == table_bytes(whole)  # rows and the report's metadata
    assert parted.schema.metadata == whole.schema.metadata
    assert elsewhere > 0 and stage.matches is not None and len(stage.matches) == whole.num_rows


def test_one_process_or_a_small_input_stays_in_this_process(tmp_path):
    rows = [q(i, f"text {i % 3}") for i in range(12)]
    paths, sizes = input_files(tmp_path, rows, [4, 4, 4])
    assert prep.MIN_ROWS_PER_PROCESS > 12
    _, elsewhere = prep.prepare_input(make_stage("dedup"), paths, sizes, 3)
    assert elsewhere == 0.0


@pytest.mark.parametrize(("rows", "parts", "want"), [
    ([5, 5, 5, 5], 2, [2, 2]), ([1, 1, 1, 10], 2, [3, 1]), ([10, 1, 1, 1], 3, [1, 1, 2]), ([3, 3], 5, [1, 1]),
    ([0, 0, 7], 2, [2, 1])])
def test_contiguous_parts_in_order_about_equal_rows(rows, parts, want):
    groups = prep.contiguous(list(range(len(rows))), rows, parts)
    assert [len(g) for g in groups] == want
    assert [i for g in groups for i in g] == list(range(len(rows)))


def test_the_backend_offers_its_workers_to_the_plan():
    assert LocalBackend(workers=1).planning_processes() == 1
    assert LocalBackend(workers=64).planning_processes() == os.cpu_count()
    assert LocalBackend(workers=2).planning_processes() == min(2, os.cpu_count() or 1)


class _PlansInTwo(LocalBackend):
    def planning_processes(self) -> int:
        return 2


def test_a_run_planned_on_two_processes_writes_the_same_bytes(tmp_path, tiny_runs, pool, in_parts, monkeypatch):
    """The runner hands the backend's processes to the plan: the tiny preset with its dedup pass (its one
    whole-input pass) in 2 spawned processes writes the reference run's bytes, prepared state included."""
    from support.runs import data_files

    from scalequest_dataset.recipe.config import resolve_config
    from scalequest_dataset.run import RunLayout, Runner

    spawned = []
    real = prep.ProcessPoolExecutor
    monkeypatch.setattr(prep, "ProcessPoolExecutor", lambda n, **kw: spawned.append(n) or real(n, **kw))
    reference = tiny_runs()
    with _PlansInTwo(pool=pool) as backend:
        Runner(tmp_path, resolve_config("tiny"), backend, show_progress=False, say=lambda _: None).run()
    assert spawned == [2]  # dedup's pass
    assert data_files(tmp_path) == data_files(reference)
    assert RunLayout(tmp_path).prepared("dedup").read_bytes() == RunLayout(reference).prepared("dedup").read_bytes()
