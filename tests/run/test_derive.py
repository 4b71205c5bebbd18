"""`run --from SOURCE`: a version built on a version is the run from scratch with the same config, byte for byte,
while unchanged stages are taken whole and unchanged rows reuse the source's outputs (no engine call)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.runs import CLI, cli_env, data_files, tiny_run

from scalequest_dataset.engines import EnginePool
from scalequest_dataset.recipe.config import resolve_config
from scalequest_dataset.recipe.models import build_tiny_reward_model
from scalequest_dataset.revisions.locator import open_source
from scalequest_dataset.run import RunLayout, Runner
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.backends.local import LocalBackend
from scalequest_dataset.run.derive import SourceMismatch, batch_invariance_problem, source_config
from scalequest_dataset.run.files import sha256_file
from scalequest_dataset.run.records import Manifest


@pytest.fixture(scope="module")
def v1(tmp_path_factory, pool) -> Path:
    return tiny_run(tmp_path_factory.mktemp("v1") / "run", pool).root


@pytest.fixture(scope="module")
def other_reward(tmp_path_factory) -> str:
    return str(build_tiny_reward_model(tmp_path_factory.mktemp("models") / "reward-seed-5", seed=5))


def derive(source: str | Path, out: Path, pool: EnginePool, *overrides: str) -> RunLayout:
    origin = open_source(source)
    with LocalBackend(pool=pool) as backend:
        Runner(out, source_config(origin, list(overrides)), backend, show_progress=False, say=lambda _: None,
               source=origin).run()
    return RunLayout(out)


def manifests(layout: RunLayout) -> dict[str, Manifest]:
    return {s: rec.read(Manifest, layout.manifest(s)) for s in layout.complete_stages(
        resolve_config("tiny").stage_names())}


CHANGES = {
    "more-questions": (["stages.questions.generators.tiny-a.count=32"], "questions"),
    "solvability-rule": (["stages.solvability.rule=final-verdict"], "solvability"),
    "keep-table": (["stages.difficulty.keep.tiny-b=[0.2, 0.2, 0.9, 0.9, 0.9]"], "difficulty"),
    "reward-model": (["stages.reward.model={reward}"], "reward"),
    "seed": (["seed=1"], "questions"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_from_equals_from_scratch_byte_for_byte(change, v1, pool, tmp_path, other_reward):
    overrides = [o.format(reward=other_reward) for o in CHANGES[change][0]]
    first_changed = CHANGES[change][1]
    scratch = tiny_run(tmp_path / "scratch", pool, *overrides)
    built = derive(v1, tmp_path / "from", pool, *overrides)
    assert data_files(built.root) == data_files(scratch.root)
    ours, theirs = manifests(built), manifests(scratch)
    assert {s: m.identity() for s, m in ours.items()} == {s: m.identity() for s, m in theirs.items()}

    names = list(ours)
    for stage in names[: names.index(first_changed)]:  # before the change: taken whole, nothing computed
        reuse = ours[stage].execution.reuse
        assert reuse is not None and reuse.mode == "stage" and reuse.computed == 0, stage
        assert reuse.source == str(v1)
    reuse = ours[first_changed].execution.reuse
    cost = ours[first_changed].execution.cost
    if change in ("solvability-rule", "keep-table"):  # a rule changed: the model's outputs reused, none re-run
        assert reuse.mode == "rows" and reuse.rows == ours[first_changed].counts.rows_in > 0
        assert cost.reused_tokens == ours[first_changed].tokens and cost.reused_tokens.completion > 0
    elif change == "more-questions":  # the 40 questions of v1 reused, the 8 new ones generated
        assert (reuse.mode, reuse.rows, reuse.computed) == ("rows", 40, 8)
        assert 0 < cost.reused_tokens.completion < ours["questions"].tokens.completion
        assert ours["solvability"].execution.reuse.rows >= 40 - ours["dedup"].counts.rows_dropped - 8
    else:  # the stage's own recipe changed: nothing of it is reused, and the manifest says why
        assert reuse.mode == "none" and reuse.rows == 0 and "own recipe changed" in reuse.reason
        assert cost.reused_tokens.completion == 0


def test_from_a_store_revision_records_revision_commit_and_lineage(v1, pool, tmp_path):
    from scalequest_dataset.revisions.publish import publish

    store = tmp_path / "store"
    publish(v1, store, tag_prefix="v1")
    change = "stages.difficulty.keep.tiny-b=[0.2, 0.2, 0.9, 0.9, 0.9]"
    scratch = tiny_run(tmp_path / "scratch", pool, change)
    proc = subprocess.run([*CLI, "run", "--from", f"{store}@v1", "--out", str(tmp_path / "v2"), "--set", change,
                           "--no-progress"], capture_output=True, text=True, env=cli_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert data_files(tmp_path / "v2") == data_files(scratch.root)
    built = manifests(RunLayout(tmp_path / "v2"))
    commit = open_source(f"{store}@v1").commit
    for m in built.values():
        assert (m.execution.reuse.revision, m.execution.reuse.commit) == ("v1", commit)
    assert "reused rows" in proc.stdout and "tokens out made" in proc.stdout  # the cost table shows both

    from scalequest_dataset.revisions.card import render_card

    card = render_card("org/name", built, {})
    assert f"derived from `v1` (commit `{commit[:12]}`)" in card


def altered_copy(v1: Path, dest: Path) -> str:
    """A copy of v1 with one judge output changed in a solvability shard and that file's sha256 and size updated in
    the manifest (its content digest left as it was): the file name returned."""
    shutil.copytree(v1, dest)
    layout = RunLayout(dest)
    manifest = json.loads(layout.manifest("solvability").read_bytes())
    info = next(f for s in manifest["shards"] for f in s["files"].values() if f["rows"])
    path = layout.data_dir("solvability") / info["file"]
    table = pq.read_table(path)
    outputs = table.column("judge_output").to_pylist()
    outputs[0] = outputs[0] + " yes"
    table = table.set_column(table.schema.get_field_index("judge_output"), "judge_output", [outputs])
    pq.write_table(table, path)
    info["sha256"], info["bytes"] = sha256_file(path), path.stat().st_size
    layout.manifest("solvability").write_text(json.dumps(manifest))
    return info["file"]


def test_a_row_altered_in_source_under_an_updated_sha256_is_not_reused(v1, pool, tmp_path):
    """Looks the same but is not: the stage's fingerprint still matches, so only the rows themselves can tell: the
    run stops, naming the file, and takes nothing of that stage."""
    name = altered_copy(v1, tmp_path / "source")
    out = tmp_path / "v2"
    with pytest.raises(SourceMismatch, match=f"data/solvability/{name}.*nothing of it is reused"):
        derive(tmp_path / "source", out, pool, "stages.difficulty.keep.tiny-b=[0.2, 0.2, 0.9, 0.9, 0.9]")
    assert not (RunLayout(out).data_dir("solvability") / name).exists()
    assert RunLayout(out).manifest("dedup").is_file()  # what was verified before it is kept


def test_cli_refuses_an_altered_source_in_one_line_exit_2(v1, tmp_path):
    name = altered_copy(v1, tmp_path / "source")
    proc = subprocess.run([*CLI, "run", "--from", str(tmp_path / "source"), "--out", str(tmp_path / "v2"),
                           "--set", "seed=0", "--no-progress"], capture_output=True, text=True, env=cli_env(),
                          timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and name in errors[0], proc.stderr


def test_rows_reused_skip_the_engine_and_take_the_new_rule_unless_the_engine_says_it_is_not_invariant():
    from stages.stagekit import FakeEngine, make_ctx, make_stage, question

    from scalequest_dataset.run.reuse import NotInvariant, Prior, process_with_prior

    stage = make_stage("solvability", {"model": "org/judge", "rule": "final-verdict"})
    kept, fresh = question("qwen2-math-qgen-00000000", "a"), question("qwen2-math-qgen-00000001", "b")
    prior = Prior.__new__(Prior)
    prior.keys, prior.origin = {kept["id"]}, "id"
    recorded = {**kept, "judge_output": "yesterday? No", "judge_finish_reason": "stop", "solvable": True,
                "judge_prompt_tokens": 5, "judge_completion_tokens": 3}  # kept by substring-yes in the source
    prior.rows = {kept["id"]: [("train", recorded)]}
    engine = FakeEngine(lambda request: "Yes")
    ctx, _ = make_ctx(stage, engine)
    result, reused, tokens = process_with_prior(stage, [kept, fresh], ctx, prior)
    assert len(engine.requests) == 1  # only the fresh row was judged
    assert [r["id"] for r in result.rows] == [fresh["id"]]
    assert [(r["id"], r["drop_reason"]) for r in result.dropped] == [(kept["id"], "unsolvable")]  # the new rule
    assert (reused, tokens.prompt, tokens.completion) == (1, 5, 3)

    class Variant(FakeEngine):
        def info(self):
            info = super().info()
            info.batch_invariant = False
            return info

    ctx, _ = make_ctx(stage, Variant(lambda request: "Yes"))
    with pytest.raises(NotInvariant):
        process_with_prior(stage, [kept, fresh], ctx, prior)


def test_row_reuse_needs_a_batch_invariant_engine():
    assert batch_invariance_problem(resolve_config("tiny")) is None
    problem = batch_invariance_problem(resolve_config("tiny", ["engine.name=vllm"]))
    assert problem is not None  # no GPU here: vLLM's batch-invariant mode cannot be on


class A100:
    """vLLM's current_platform on an A100 (compute capability 8.0): batch-invariant mode, graphs not shown."""

    device_type = "cuda"

    def is_xpu(self) -> bool:
        return False

    def is_cuda_alike(self) -> bool:
        return True

    def is_cuda(self) -> bool:
        return True

    def is_rocm(self) -> bool:
        return False

    def get_device_capability(self) -> tuple[int, int]:
        return (8, 0)


def test_row_reuse_refuses_vllm_cuda_graphs_where_their_invariance_is_not_shown():
    assert batch_invariance_problem(resolve_config("tiny", ["engine.name=vllm"]), A100()) is None  # eager by default
    forced = resolve_config("tiny", ["engine.name=vllm", "engine.vllm.enforce_eager=false"])
    assert "(8, 0) is below (9, 0)" in batch_invariance_problem(forced, A100())


def test_diff_names_the_changed_recipe_field_first_and_why_each_later_stage_changed(v1, pool, tmp_path):
    from scalequest_dataset.diffing.compare import diff
    from scalequest_dataset.diffing.report import render

    built = derive(v1, tmp_path / "v2", pool, "stages.difficulty.keep.tiny-b=[0.2, 0.2, 0.9, 0.9, 0.9]")
    report = diff(str(v1), str(built.root))
    first = report.recipe_changes()[0]
    assert (first["stage"], first["field"], first["b"]) == ("difficulty", "params.keep.tiny-b", [0.2, 0.2, 0.9, 0.9, 0.9])
    stages = {s.stage: s for s in report.stages}
    assert stages["difficulty"].because["input"] == 0 and stages["difficulty"].because["recipe"] > 0
    assert stages["responses"].because["recipe"] == 0 and stages["responses"].because["input"] > 0
    text = render(report, "text")
    assert text.index("params.keep.tiny-b") < text.index("questions: identical")  # named first
    assert "because their input changed" in text


@pytest.mark.parametrize("change", ["keep-table", "solvability-rule", "more-questions"])
def test_a_rule_change_never_reruns_a_model_even_on_an_engine_that_is_not_batch_invariant(change, pool, tmp_path):
    """On an engine whose rows depend on their batch-mates (here the simulated one, as vLLM off a GPU), a stage whose
    input and shard cut are the source's makes the source's engine calls again: only its rule changed, so its
    recorded outputs are reused (0 engine tokens) and the result is the run from scratch's. Where its input
    changed (more questions), the calls would differ: it is recomputed and says why."""
    base = ("engine.name=simulate", "stages.solvability.max_tokens=256", "stages.difficulty.max_tokens=512",
            "stages.responses.max_tokens=512")  # room for the simulated replies' verdicts and answers
    assert batch_invariance_problem(resolve_config("tiny", list(base))) is not None
    v1 = tiny_run(tmp_path / "v1", pool, *base).root
    overrides = [*base, *CHANGES[change][0]]
    scratch = tiny_run(tmp_path / "scratch", pool, *overrides)
    built = derive(v1, tmp_path / "from", pool, *CHANGES[change][0])
    assert data_files(built.root) == data_files(scratch.root)
    stage = CHANGES[change][1]
    reuse, manifest = manifests(built)[stage].execution.reuse, manifests(built)[stage]
    if change == "more-questions":
        later = manifests(built)["solvability"].execution.reuse
        assert later.mode == "none" and "batch-mates" in later.reason
    else:
        assert reuse.mode == "rows" and reuse.rows == manifest.counts.rows_in > 0 and reuse.computed == 0
        assert manifest.execution.cost.reused_tokens == manifest.tokens and manifest.tokens.completion > 0
