"""diff and regenerate on real tiny runs and real store revisions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.runs import tiny_run

import scalequest_dataset
from scalequest_dataset.diffing import rows as rowdiff
from scalequest_dataset.diffing.report import render
from scalequest_dataset.engines import EnginePool
from scalequest_dataset.revisions import locator as sources
from scalequest_dataset.run import RunLayout
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.files import content_digest, read_json, sha256_file, write_json
from scalequest_dataset.run.records import Manifest, ShardRecord, stage_content

CLI = [sys.executable, "-m", "scalequest_dataset.cli"]
STAGES = ["questions", "language"]


def make_run(root: Path, pool: EnginePool, *overrides: str) -> Path:
    tiny_run(root, pool, *overrides, stages=STAGES)
    return root


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, pool) -> Path:
    return make_run(tmp_path_factory.mktemp("a"), pool)


@pytest.fixture(scope="module")
def run_b(tmp_path_factory, pool) -> Path:
    """One setting changed: tiny-b's system prompt (only tiny-b's questions can change)."""
    return make_run(tmp_path_factory.mktemp("b"), pool,
                    "stages.questions.generators.tiny-b.system_prompt=Write a hard math problem.")


def tamper(run: Path, dest: Path, stage: str, mutate, split: str = "train") -> Path:
    """A copy of a run whose first shard of `stage` (`split`) went through `mutate(table) -> table`, manifest
    updated (a consistent other version, as someone editing data and re-recording it would make)."""
    shutil.copytree(run, dest)
    manifest = read_json(dest / "manifests" / f"{stage}.json")
    files = manifest["shards"][0]["files"]
    if split not in files:  # a shard that dropped nothing has no `dropped` file: start from an empty one
        from scalequest_dataset.run.files import arrow_schema
        from scalequest_dataset.stages import STAGES

        name = files["train"]["file"].replace("train-", f"{split}-", 1)
        files[split] = {**files["train"], "file": name}
        pq.write_table(arrow_schema(STAGES[stage].dropped_features).empty_table(), dest / "data" / stage / name)
    info = files[split]
    path = dest / "data" / stage / info["file"]
    table = mutate(pq.read_table(path))
    pq.write_table(table, path)
    info["sha256"], info["bytes"], info["rows"] = sha256_file(path), path.stat().st_size, table.num_rows
    info["content"] = content_digest(table)
    manifest["content"] = stage_content(rec.parse(Manifest, manifest, "tampered").shards)
    write_json(dest / "manifests" / f"{stage}.json", manifest)
    return dest


def test_one_setting_changed_names_rows_columns_and_setting(run_a, run_b):
    report = scalequest_dataset.diff(str(run_a), str(run_b), stage="questions", sample=50)
    (q,) = report.stages
    assert q.status == "changed" and not report.identical
    plan = read_json(run_a / "state" / "questions" / "plan.json")
    tiny_b_shards = {f"train-{s['index']:05d}-of-{len(plan['shards']):05d}.parquet" for s in plan["shards"]
                     if s["source"]["generator"] == "tiny-b"}
    assert set(q.shards_changed) == tiny_b_shards  # tiny-a's shards were never touched
    assert q.rows["added"] == q.rows["removed"] == 0
    assert 0 < q.rows["changed"] <= 16
    assert "query" in q.rows["changed_by_column"]
    assert set(q.rows["changed_by_column"]) <= {"query", "finish_reason", "completion_tokens", "prompt_tokens"}
    assert all(s["id"].startswith("tiny-b-") for s in q.rows["samples"])
    changed_fields = {w["field"]: w for w in q.why}
    assert {"config.stages.questions.generators", "params.generators", "fingerprint"} <= set(changed_fields)
    assert "prompts.tiny-b" in changed_fields and "prompts.tiny-a" not in changed_fields
    assert "Write a hard math problem." in json.dumps(changed_fields["params.generators"]["b"])
    assert not any(f.startswith(("config.seed", "params.top_p", "params.temperature")) for f in changed_fields)
    text = render(report, "text")
    assert "tiny-b-" in text and "system_prompt" in text


def test_downstream_stage_names_its_input_as_the_why(run_a, run_b):
    (lang,) = scalequest_dataset.diff(str(run_a), str(run_b), stage="language").stages
    assert lang.status == "changed"
    assert any(w["field"] == "input.fingerprint" for w in lang.why)
    assert not any(w["field"].startswith("config.stages.questions") for w in lang.why)


def test_removed_rows_by_id(run_a, tmp_path, pool):
    fewer = make_run(tmp_path / "fewer", pool, "stages.questions.generators.tiny-b.count=12")
    (q,) = scalequest_dataset.diff(str(run_a), str(fewer), stage="questions", sample=10).stages
    assert q.rows["removed"] == 4 and q.rows["added"] == 0 and q.rows["changed"] == 0
    assert q.rows["removed_ids"] == [f"tiny-b-{i:08d}" for i in range(12, 16)]
    assert q.counts["a"]["rows_out"] - q.counts["b"]["rows_out"] == 4


def test_identical_revisions_exit_0_and_compare_no_rows(run_a, tmp_path, monkeypatch):
    scalequest_dataset.publish(run_a, tmp_path / "store", STAGES, tag_prefix="v1")
    scalequest_dataset.publish(run_a, tmp_path / "store2", STAGES, tag_prefix="v1")
    pairs = ((str(run_a), str(run_a)), (f"{tmp_path / 'store'}@v1-language", f"{tmp_path / 'store2'}@v1-language"),
             (str(run_a), f"{tmp_path / 'store'}@main"))
    fetched = []
    real = sources.Source.file
    monkeypatch.setattr(sources.Source, "file", lambda self, stage, info, **kw: fetched.append(info.file)
                        or real(self, stage, info, **kw))

    def no_reads(*args, **kwargs):
        raise AssertionError("an identical diff must not compare rows")

    monkeypatch.setattr(rowdiff, "compare_shards", no_reads)
    for a, b in pairs:  # verified: every file's bytes checked against its manifest, no row compared
        fetched.clear()
        report = scalequest_dataset.diff(a, b)
        assert report.identical, render(report, "text")
        assert len(fetched) == 2 * sum(len(m.files()) for m in sources.open_source(a).manifests().values())

    def no_fetch(*args, **kwargs):
        raise AssertionError("diff --no-verify reads no data file")

    monkeypatch.setattr(sources.Source, "file", no_fetch)
    for a, b in pairs:  # trusting the manifests: nothing is read at all
        assert scalequest_dataset.diff(a, b, verify=False).identical
    res = subprocess.run([*CLI, "diff", str(run_a), f"{tmp_path / 'store'}@v1-language"], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_cli_exit_codes_and_formats(run_a, run_b, tmp_path):
    res = subprocess.run([*CLI, "diff", str(run_a), str(run_b), "--format", "json"], capture_output=True, text=True)
    assert res.returncode == 1
    data = json.loads(res.stdout)
    assert data["identical"] is False and {s["stage"] for s in data["stages"]} == set(STAGES)
    res = subprocess.run([*CLI, "diff", str(run_a), str(run_b), "--format", "html", "-o", str(tmp_path / "d.html")],
                         capture_output=True, text=True)
    assert res.returncode == 1
    page = (tmp_path / "d.html").read_text()
    assert "data:image/svg+xml;base64," in page and "tiny-b-" in page
    res = subprocess.run([*CLI, "diff", str(run_a), str(run_b), "--format", "markdown"], capture_output=True,
                         text=True)
    assert res.stdout.startswith("# diff") and "## questions: changed" in res.stdout
    res = subprocess.run([*CLI, "diff", str(run_a), "/no/such/place"], capture_output=True, text=True)
    assert res.returncode == 2 and "/no/such/place" in res.stderr


POOL_PROBE = """
import sys
from scalequest_dataset.cli import main
code = main(sys.argv[1:])
import pyarrow as pa
print("POOL", pa.default_memory_pool().backend_name)
raise SystemExit(code)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CLI chooses jemalloc on Linux only")
def test_cli_diff_decodes_on_jemalloc_unless_the_user_chose_a_pool_and_reports_the_same_bytes(run_a, run_b, tmp_path):
    """`scalequest diff` reads on Arrow's jemalloc pool (mimalloc zeroes every page again shard after shard: a
    sixth of a large diff's CPU); a pool the user set is kept; the report's bytes do not depend on the pool."""
    import os

    reports = {}
    for chosen in (None, "mimalloc", "system"):
        env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
        if chosen:
            env["ARROW_DEFAULT_MEMORY_POOL"] = chosen
        out = tmp_path / f"{chosen}.json"
        res = subprocess.run([sys.executable, "-c", POOL_PROBE, "diff", str(run_a), str(run_b), "--format", "json",
                              "-o", str(out)], capture_output=True, text=True, env=env)
        assert res.returncode == 1, res.stderr[-2000:]
        assert f"POOL {chosen or 'jemalloc'}" in res.stdout
        reports[chosen] = out.read_bytes()
    assert reports[None] == reports["mimalloc"] == reports["system"] and b'"changed"' in reports[None]


def test_same_data_from_another_environment_is_identical_and_says_what_differs(run_a, tmp_path):
    other = tmp_path / "other-env"
    shutil.copytree(run_a, other)
    manifest = read_json(other / "manifests" / "questions.json")
    for env in manifest["execution"]["environments"].values():
        env["libraries"]["torch"] = "9.9.9"
    write_json(other / "manifests" / "questions.json", manifest)
    report = scalequest_dataset.diff(str(run_a), str(other), stage="questions")
    (q,) = report.stages
    assert report.identical and q.status == "identical"
    assert q.why == [] and q.execution == ["environment.libraries.torch"]
    text = render(report, "text")
    assert "reproduced in another environment: environment.libraries.torch" in text
    page = render(report, "html")
    assert "reproduced in another environment" in page and "environment.libraries.torch" in page


def test_schema_change_is_flagged(run_a, tmp_path):
    def change(table: pa.Table) -> pa.Table:
        table = table.append_column("extra", pa.array(["x"] * table.num_rows))
        return table.set_column(table.schema.get_field_index("seed"), "seed", table.column("seed").cast(pa.string()))

    changed = tamper(run_a, tmp_path / "schema", "questions", change)
    (q,) = scalequest_dataset.diff(str(run_a), str(changed), stage="questions").stages
    assert q.schema["added"] == ["extra"]
    assert q.schema["retyped"] == [{"column": "seed", "a": "int64", "b": "string"}]
    # int64 -> string: no value survives as the same kind; the added column's cells are not "changed rows"
    assert q.rows["changed_by_column"] == {"seed": 8} and q.rows["changed"] == 8
    assert "SCHEMA" in render(scalequest_dataset.diff(str(run_a), str(changed), stage="questions"), "text")


def test_regenerate_matches_every_shard_of_a_published_stage(run_a, tmp_path, pool):
    scalequest_dataset.publish(run_a, tmp_path / "store", STAGES)
    for stage in STAGES:  # `language` also proves its input is taken from the published revision
        report = scalequest_dataset.regenerate(f"{tmp_path / 'store'}@v1-{stage}", stage, pool=pool, scratch=tmp_path / f"s-{stage}")
        assert report.all_match, report.describe()
        assert len(report.shards) == len(read_json(run_a / "manifests" / f"{stage}.json")["shards"])
        assert all(s.byte_identical for s in report.shards)
    # Rebuilt with the engine batch size the shards recorded (tiny: 16), not the config default (64): rows in
    # flight can move vLLM's numbers.
    rebuilt = rec.read(ShardRecord, RunLayout(tmp_path / "s-questions").record("questions", 0))
    assert {e["batch_size"] for e in rebuilt.execution.engines.values()} == {16}


def test_regenerate_reports_a_tampered_shard(run_a, tmp_path, pool):
    def change(table: pa.Table) -> pa.Table:
        queries = table.column("query").to_pylist()
        queries[1] = "tampered"
        return table.set_column(table.schema.get_field_index("query"), "query", pa.array(queries))

    bad = tamper(run_a, tmp_path / "bad", "questions", change)
    scalequest_dataset.publish(bad, tmp_path / "store", ["questions"], tag_prefix="bad")
    report = scalequest_dataset.regenerate(f"{tmp_path / 'store'}@bad-questions", "questions", shards=[0, 1], pool=pool,
                        scratch=tmp_path / "scratch")
    assert [s.matches for s in report.shards] == [False, True]
    (difference,) = report.shards[0].first_differences
    assert difference["column"] == "query" and difference["published"] == "tampered"
    assert "MISMATCH" in report.describe()


def test_the_dropped_split_is_compared(run_a, tmp_path):
    """language has no `dropped` file in run_a (it dropped nothing); B drops two rows there (train as it is)."""
    def drop_two(table: pa.Table) -> pa.Table:
        rows = pq.read_table(run_a / "data" / "language" / "train-00000-of-00005.parquet").to_pylist()[:2]
        for r in rows:
            r.update(drop_reason="non-ascii", language="xx", language_score=0.5)
        return pa.Table.from_pylist(rows, schema=table.schema)

    changed = tamper(run_a, tmp_path / "dropped", "language", drop_two, split="dropped")
    report = scalequest_dataset.diff(str(run_a), str(changed), stage="language", max_ids=10)
    (lang,) = report.stages
    assert set(lang.splits) == {"train", "dropped"} and lang.status == "changed" and not report.identical
    assert lang.splits["train"].status == "identical"
    dropped = lang.splits["dropped"]
    assert dropped.status == "changed" and dropped.rows_total == (0, 2)  # A has no `dropped` file: it dropped nothing
    assert dropped.rows["added"] == 2 and dropped.rows["added_ids"] == ["tiny-a-00000000", "tiny-a-00000001"]
    assert dropped.stats["drop_reason"]["b"] == {"non-ascii": 2}
    text = render(report, "text")
    assert "[dropped] changed" in text and "+ tiny-a-00000000" in text
    data = json.loads(render(report, "json"))
    assert data["stages"][0]["splits"]["dropped"]["rows"]["added"] == 2


def test_same_rows_in_other_files_is_the_same_data(run_a, tmp_path):
    """Rewritten with other writer options and no schema metadata: files differ, rows do not."""
    other = tamper(run_a, tmp_path / "rewritten", "questions", lambda t: t.replace_schema_metadata(None))
    report = scalequest_dataset.diff(str(run_a), str(other), stage="questions")
    (q,) = report.stages
    assert q.status == "files-only" and report.identical
    assert q.splits["train"].shards_changed and not q.rows  # decided from the content digests: no row read
    assert q.splits["train"].file_causes == ["the files' schema metadata differs: huggingface"]
    assert "same data, other files" in render(report, "html")
    res = subprocess.run([*CLI, "diff", str(run_a), str(other), "--stage", "questions"], capture_output=True, text=True)
    assert res.returncode == 0 and "schema metadata differs" in res.stdout, res.stdout + res.stderr
