"""Decontamination against benchmarks published to the local Hub-API server and loaded through the real
`huggingface_hub` and `datasets` clients (in subprocesses: they read HF_ENDPOINT when imported; this process
stays offline). Planning resolves and loads the benchmarks there; the shards then run here, offline, on
one worker or two: a worker needs nothing but the run directory."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from decontamkit import GSM, MATH, QUESTIONS, clean_ratio, grams, oracle

GSM_REPO, MATH_REPO, MATH500_REPO = "bench/gsm8k-mini", "bench/math-mini", "bench/math500-mini"
STAGES = ["questions", "language", "dedup"]
SMALLER = ["stages.questions.generators.0.count=12", "stages.questions.generators.1.count=8"]  # 20 questions
# Only in GSM's train split: a question copying it must stay clean (the test split is the one compared).
TRAIN_ONLY = "A farmer has 17 cows and buys 5 more cows at the market on a sunny day in June."
CLEAN = "A train leaves the station at noon and travels west at a constant speed of sixty miles per hour."


def section(mode: str = "report", **revisions: str | None) -> dict[str, Any]:
    return {"mode": mode, "benchmarks": [
        {"name": "gsm8k", "repo": GSM_REPO, "config": "main", "split": "test", "columns": ["question"],
         "revision": revisions.get("gsm8k")},
        {"name": "math", "repo": MATH_REPO, "config": ["algebra", "geometry"], "split": "test",
         "columns": ["problem"]},
        {"name": "math500", "repo": MATH500_REPO, "split": "test", "columns": ["problem"], "id_column": "unique_id"}]}


# ---------------------------------------------------------------------------------------------- client side


def _client_publish(repos: dict[str, dict[str, dict[str, list[dict]]]]) -> dict[str, str]:
    """repo -> {config: {split: rows}} as Parquet files with a README `configs:` block; returns repo -> commit."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    commits = {}
    for repo, configs in repos.items():
        api.create_repo(repo, repo_type="dataset", exist_ok=True)
        ops, entries = [], []
        for config, splits in configs.items():
            files = []
            for split, rows in splits.items():
                buf = io.BytesIO()
                pq.write_table(pa.Table.from_pylist(rows), buf)
                ops.append(CommitOperationAdd(f"{config}/{split}-00000-of-00001.parquet", buf.getvalue()))
                files.append({"split": split, "path": f"{config}/{split}-*.parquet"})
            entries.append({"config_name": config, "data_files": files})
        readme = f"---\n{yaml.safe_dump({'configs': entries}, sort_keys=False)}---\n# {repo}\n"
        ops.append(CommitOperationAdd("README.md", readme.encode()))
        commits[repo] = api.create_commit(repo, ops, commit_message="fixture", repo_type="dataset").oid
    return commits


def _client_stage(sections: list[dict], questions: list[dict], cuts: list[list[int]]) -> list[dict[str, Any]]:
    """Per section: the pinned revisions, the report, and for every shard cut the kept and dropped rows."""
    import pyarrow as pa
    from stagekit import make_ctx, make_stage

    out = []
    for sec in sections:
        runs = []
        for cut in cuts:
            stage = make_stage("decontamination", sec)
            stage.prepare(pa.Table.from_pylist(questions).to_batches(max_chunksize=max(cut[0], 1) if cut else 8))
            ctx, _ = make_ctx(stage)
            kept, dropped, start = [], [], 0
            for stop in [*cut, len(questions)]:
                result = stage.process(questions[start:stop], ctx)
                kept, dropped, start = kept + result.rows, dropped + result.dropped, stop
            runs.append({"kept": kept, "dropped": dropped})
        out.append({"pinned": {r: m.revision for r, m in stage.models().items()}, "report": stage.report,
                    "runs": runs})
    return out


def _client_plan(run_dirs: list[str], sec: dict) -> list[dict[str, Any]]:
    """Add the decontamination stage to each run directory's config and plan it (loading the benchmarks)."""
    import yaml

    from scalequest_dataset.recipe.config import build_config
    from scalequest_dataset.run import RunLayout
    from scalequest_dataset.run.plan import adopt_config, plan_stage

    plans = []
    for run_dir in run_dirs:
        layout = RunLayout(run_dir)
        data = yaml.safe_load(layout.config.read_text(encoding="utf-8"))
        data["stages"]["decontamination"] = sec
        config = build_config(data)
        adopt_config(layout, config)
        plans.append(plan_stage(layout, config, "decontamination").model_dump(mode="json"))
    return plans


# ---------------------------------------------------------------------------------------------- fixtures


def dedup_questions(root: Path) -> dict[str, str]:
    return {r["id"]: r["query"] for f in sorted((root / "data" / "dedup").glob("train-*.parquet"))
            for r in pq.read_table(f).to_pylist()}


def unique_gram(questions: dict[str, str], prefix: str) -> tuple[str, str]:
    """The first question of a generator with a 13-gram no other question has, and that 13-gram."""
    counts = Counter(g for text in questions.values() for g in grams(text, 13))
    for qid in sorted(questions):
        if qid.startswith(prefix):
            mine = sorted(g for g in grams(questions[qid], 13) if counts[g] == 1)
            if mine:
                return qid, " ".join(mine[0])
    raise AssertionError(f"no {prefix} question has a 13-gram of its own")


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory, pool) -> dict[int, Path]:
    """questions -> language -> dedup of the `tiny` preset, cut in shards of 2 and of 8 rows (offline, here)."""
    from support.runs import tiny_run

    roots = {}
    for size in (2, 8):
        roots[size] = tmp_path_factory.mktemp(f"rows{size}")
        tiny_run(roots[size], pool, f"rows_per_shard={size}", *SMALLER, stages=STAGES)
    return roots


@pytest.fixture(scope="module")
def fixture(run_client, tiny_inputs) -> dict[str, Any]:
    """Three benchmark repos shaped like GSM8K (config main), MATH (two subject configs) and MATH-500 (a subset
    of MATH with unique_id), holding the handcrafted texts plus 13-grams copied from two tiny-run questions."""
    tiny = dedup_questions(tiny_inputs[8])
    a_id, a_gram = unique_gram(tiny, "tiny-a")
    b_id, b_gram = unique_gram(tiny, "tiny-b")
    repeated = " ".join(["answethe"] * 13)  # in most tiny-a questions: one item, many questions
    gsm_test = [*GSM, f"Tom reads that {a_gram} and wonders how many pages remain.", f"Count: {repeated}", CLEAN]
    algebra = [MATH[0], f"Solve for the unknown when {b_gram} holds true."]
    geometry = [MATH[1], "Too short."]
    repos = {
        GSM_REPO: {"main": {"test": [{"question": t, "answer": "#### 1"} for t in gsm_test],
                            "train": [{"question": TRAIN_ONLY, "answer": "#### 22"}]}},
        MATH_REPO: {"algebra": {"test": [{"problem": t, "level": "Level 1"} for t in algebra]},
                    "geometry": {"test": [{"problem": t, "level": "Level 2"} for t in geometry]}},
        MATH500_REPO: {"default": {"test": [{"problem": geometry[0], "unique_id": "test/geometry/0.json"},
                                            {"problem": algebra[1], "unique_id": "test/algebra/1.json"}]}},
    }
    commits = run_client(__file__, "_client_publish", repos)
    items = [("gsm8k", [(str(i), [t]) for i, t in enumerate(gsm_test)]),
             ("math", [(f"algebra/{i}", [t]) for i, t in enumerate(algebra)]
              + [(f"geometry/{i}", [t]) for i, t in enumerate(geometry)]),
             ("math500", [("test/geometry/0.json", [geometry[0]]), ("test/algebra/1.json", [algebra[1]])])]
    return {"commits": commits, "items": items, "a": a_id, "b": b_id, "tiny": tiny,
            "sizes": {"gsm8k": len(gsm_test), "math": len(algebra) + len(geometry), "math500": 2}}


def handcrafted() -> list[dict]:
    from decontamkit import q

    return [*QUESTIONS, q(8, TRAIN_ONLY), q(9, CLEAN + " What is its speed?")]


# ---------------------------------------------------------------------------------------------- tests


def test_benchmarks_load_through_the_real_client_at_pinned_commits(run_client, fixture):
    questions = handcrafted()
    commits = fixture["commits"]
    gsm = commits[GSM_REPO]  # pinned by its commit; the others by no revision at all (main, resolved now)
    results = run_client(__file__, "_client_stage", [section(gsm8k=gsm), section("remove", gsm8k=gsm)], questions,
                         [[], [1, 2, 3, 4, 5, 6, 7, 8], [3, 6]])
    for result in results:
        assert result["pinned"] == {"benchmark:gsm8k": commits[GSM_REPO], "benchmark:math": commits[MATH_REPO],
                                    "benchmark:math500": commits[MATH500_REPO]}
    report, removed = results[0], results[1]
    expected = oracle({r["id"]: r["query"] for r in questions}, fixture["items"], 13)
    by_id = {r["id"]: r for r in report["runs"][0]["kept"]}
    assert {qid for qid, r in by_id.items() if r["contamination_benchmark"]} == set(expected)
    assert by_id["deepseek-qgen-00000008"]["contamination_benchmark"] is None  # only in the train split
    assert (by_id["deepseek-qgen-00000004"]["contamination_benchmarks"]) == ["math", "math500"]
    assert by_id["deepseek-qgen-00000004"]["contamination_item"] == "geometry/0"  # config/index ids
    table = {b["name"]: b for b in report["report"]["benchmarks"]}
    for name, size in fixture["sizes"].items():
        assert table[name]["items"] == size
        assert table[name]["clean_ratio"] == clean_ratio(expected, name, size)
        assert table[name]["revision"] == commits[{"gsm8k": GSM_REPO, "math": MATH_REPO,
                                                    "math500": MATH500_REPO}[name]]
    assert table["math500"]["matched"] == [{"item": "test/geometry/0.json", "questions": 1,
                                            "first": "deepseek-qgen-00000004"}]
    # The same decisions for every shard cut and batch size; remove mode moves exactly those rows to dropped.
    for result in results:
        assert all(run == result["runs"][0] for run in result["runs"])
    dropped = removed["runs"][0]["dropped"]
    assert {r["id"] for r in dropped} == set(expected)
    assert {r["drop_reason"] for r in dropped} == {"contaminated"}
    assert all(r["contamination_ngram"] and r["contamination_item"] for r in dropped)
    assert removed["report"] == report["report"]


def _client_push_change(repo: str) -> str:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from huggingface_hub import CommitOperationAdd, HfApi

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"question": "An entirely different benchmark item now.", "answer": ""}]),
                   buf)
    return HfApi().create_commit(repo, [CommitOperationAdd("main/test-00000-of-00001.parquet", buf.getvalue())],
                                 commit_message="change", repo_type="dataset").oid


def test_a_pinned_revision_loads_the_same_items_after_the_repo_moves(run_client, fixture):
    old = fixture["commits"][GSM_REPO]
    before = run_client(__file__, "_client_stage", [section(gsm8k=old)], QUESTIONS, [[]])[0]
    new = run_client(__file__, "_client_push_change", GSM_REPO)
    pinned, moved = run_client(__file__, "_client_stage", [section(gsm8k=old), section()], QUESTIONS, [[]])
    gsm = lambda r: r["report"]["benchmarks"][0]  # noqa: E731
    assert gsm(pinned) == gsm(before) and gsm(pinned)["revision"] == old
    assert gsm(moved)["revision"] == new != old and gsm(moved)["items"] == 1
    assert gsm(moved)["digest"] != gsm(pinned)["digest"]


def test_a_run_planned_with_the_hub_runs_offline_on_any_worker_count(run_client, fixture, tiny_inputs, pool,
                                                                     tmp_path):
    from support.runs import data_files

    from scalequest_dataset.revisions.card import render_card
    from scalequest_dataset.run import RunLayout, Runner
    from scalequest_dataset.run.backends.local import LocalBackend
    from scalequest_dataset.run.plan import load_config, read_manifest
    from scalequest_dataset.stages.decontamination import read_report

    roots = {name: tmp_path / name for name in ("one", "two", "eight")}
    shutil.copytree(tiny_inputs[2], roots["one"])
    shutil.copytree(tiny_inputs[2], roots["two"])
    shutil.copytree(tiny_inputs[8], roots["eight"])
    commits = fixture["commits"]
    # The run before this one pinned GSM8K's original commit; the repo has moved since (the test above).
    sec = section("remove", gsm8k=commits[GSM_REPO])
    plans = run_client(__file__, "_client_plan", [str(p) for p in roots.values()], sec)
    assert all(p["models"]["benchmark:math"] == {"id": f"hf://datasets/{MATH_REPO}",
                                                 "revision": commits[MATH_REPO]} for p in plans)
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # from here on nothing may reach a Hub
    for name, backend in (("one", LocalBackend(pool=pool)), ("two", LocalBackend(workers=2)),
                          ("eight", LocalBackend(pool=pool))):
        with backend:
            layout = RunLayout(roots[name])
            Runner(roots[name], load_config(layout), backend, show_progress=False, say=lambda _: None
                   ).run(["decontamination"])

    def stage_files(root: Path) -> dict[str, bytes]:
        files = {k: v for k, v in data_files(root).items() if k.startswith("data/decontamination/")}
        state = RunLayout(root).state_dir("decontamination")
        plan = json.loads((state / "plan.json").read_bytes())
        plan.pop("seconds")  # the planning CPU time: run noise, as in a manifest's execution
        return {**files, "plan": plan, "prepared": (state / "prepared.parquet").read_bytes()}

    # Planned twice, run on one worker and on two: the same bytes.
    assert stage_files(roots["one"]) == stage_files(roots["two"])
    manifests = {name: read_manifest(RunLayout(root), "decontamination") for name, root in roots.items()}
    assert manifests["one"].identity() == manifests["two"].identity()
    # Shards of 2 rows or 8: the same decisions (and the same prepared table, which depends on rows only).
    rows = {name: {r["id"]: r for split in ("train", "dropped") for f in sorted(
        (root / "data" / "decontamination").glob(f"{split}-*.parquet")) for r in pq.read_table(f).to_pylist()}
        for name, root in roots.items()}
    assert rows["one"] == rows["eight"]
    assert stage_files(roots["one"])["prepared"] == stage_files(roots["eight"])["prepared"]
    # The known overlaps, and every decision as the brute-force oracle has it.
    expected = oracle(fixture["tiny"], fixture["items"], 13)
    assert {qid for qid, r in rows["one"].items() if r["drop_reason"] == "contaminated"} == set(expected)
    found = {qid: r["contamination_benchmarks"] for qid, r in rows["one"].items() if r["contamination_benchmark"]}
    assert found == {qid: sorted({b for b, _ in pairs}, key=["gsm8k", "math", "math500"].index)
                     for qid, pairs in expected.items()}
    report = read_report(pq.read_table(RunLayout(roots["one"]).prepared("decontamination")))
    table = {b["name"]: b for b in report["benchmarks"]}
    assert {"item": "3", "questions": 1, "first": fixture["a"]} in table["gsm8k"]["matched"]
    assert {"item": "algebra/1", "questions": 1, "first": fixture["b"]} in table["math"]["matched"]
    repeated = next(m for m in table["gsm8k"]["matched"] if m["item"] == "4")  # 13 x "answethe"
    assert repeated["questions"] == sum(("gsm8k", "4") in pairs for pairs in expected.values()) > 1
    for name, size in fixture["sizes"].items():
        assert table[name]["clean_ratio"] == clean_ratio(expected, name, size)
    assert report["questions"] == len(fixture["tiny"]) and report["contaminated"] == len(expected)
    manifest = manifests["one"]
    assert manifest.counts.dropped == {"contaminated": len(expected)}
    assert manifest.recipe.models["benchmark:gsm8k"].revision == commits[GSM_REPO]
    assert manifest.report == report  # finalize put the whole-input report in the manifest
    # The card's Table 6: per benchmark its items, clean items and ratio, matched items, from the manifest.
    card = render_card("org/bench", {"decontamination": manifest}, {"decontamination": "v1-decontamination"})
    gsm = table["gsm8k"]
    assert (f"| `gsm8k` | `{GSM_REPO}` (main, test) | `{commits[GSM_REPO][:12]}` | {gsm['items']} | {gsm['clean']} | "
            f"{100 * gsm['clean_ratio']:.2f} % | {len(gsm['matched'])} | {gsm['questions']} |") in card
    assert f"| `math` | `{MATH_REPO}` (2 configs, test) |" in card and "they were removed" in card
    assert f"benchmarks: gsm8k = `hf://datasets/{GSM_REPO}`@`{commits[GSM_REPO]}`" in card


if __name__ == "__main__":  # client side: `run_client` starts this file with (function, JSON args, result path)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    result = globals()[sys.argv[1]](*json.loads(sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps(result))
