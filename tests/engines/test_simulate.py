"""`--engine simulate`: deterministic text of each role's shape, no model loaded, nothing resolved; the paper
preset rehearsed end to end at a small size (every stage, publish, load, diff), byte for byte on a re-run and
with two worker processes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.runs import data_files

from scalequest_dataset.engines import EnginePool, Request, Sampling, load_engine
from scalequest_dataset.engines.simulate import BOILERPLATE
from scalequest_dataset.recipe import model_identity
from scalequest_dataset.recipe.answers import extract_answer
from scalequest_dataset.recipe.config import resolve_config
from scalequest_dataset.recipe.prompts import pre_query_template, response_prompt, solvability_prompt
from scalequest_dataset.run import RunLayout, Runner
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.backends.local import LocalBackend
from scalequest_dataset.run.records import Manifest
from scalequest_dataset.stages.solvability import final_verdict, substring_yes

PAPER = ["stages.questions.generators.0.count=40", "stages.questions.generators.1.count=40", "rows_per_shard=16"]


@pytest.fixture(scope="module")
def engine():
    return load_engine("simulate", "some/model")


def _generate(engine, prompts: list[str], seed0: int = 0, max_tokens: int = 2048) -> list[str]:
    sampling = Sampling(1.0, 0.99, max_tokens)
    return [c.text for c in engine.generate([Request(p, sampling, seed0 + i) for i, p in enumerate(prompts)])]


def test_each_role_has_its_shape(engine):
    questions = _generate(engine, [pre_query_template("qwen").prefix] * 400)
    assert 250 < sum(map(len, questions)) / len(questions) < 400
    assert 0.12 < sum(not q.isascii() for q in questions) / len(questions) < 0.3  # the language filter's work
    assert len({q.casefold().split().__str__() for q in questions}) < len(questions)  # near-duplicates
    assert any(q.endswith(BOILERPLATE) for q in questions)
    judge = engine.chat_prompt([{"role": "user", "content": solvability_prompt(questions[0])}])
    verdicts = _generate(engine, [engine.chat_prompt([{"role": "user", "content": solvability_prompt(q)}])
                                  for q in questions])
    assert judge.endswith("<|im_start|>assistant\n")
    assert 300 < sum(map(len, verdicts)) / len(verdicts) < 500
    assert all(substring_yes(v) == final_verdict(v) for v in verdicts)  # both rules read the verdict alike
    assert 0.6 < sum(map(final_verdict, verdicts)) / len(verdicts) < 0.95
    responses = _generate(engine, [response_prompt(q) for q in questions[:50] for _ in range(4)])
    assert 1100 < sum(map(len, responses)) / len(responses) < 1500
    answers = [extract_answer(r) for r in responses]
    assert 0.9 < sum(a is not None for a in answers) / len(answers) < 1.0
    groups = [set(answers[i : i + 4]) for i in range(0, len(answers), 4)]
    assert any(len(g) == 1 for g in groups) and any(len(g) > 1 for g in groups)  # self-consistency has work
    assert any("frac" in (a or "") for a in answers) and any("/" in (a or "") for a in answers)  # spellings
    scores = engine.score([[{"role": "user", "content": q}, {"role": "assistant", "content": r}]
                           for q, r in zip(questions, responses, strict=False)])
    assert len(set(scores)) == len(scores) and all(isinstance(s, float) for s in scores)


def test_a_row_depends_on_its_seed_and_prompt_alone(engine):
    prompt = pre_query_template("deepseek").prefix
    alone = _generate(engine, [prompt], seed0=7)
    batch = _generate(engine, [pre_query_template("qwen").prefix] * 7 + [prompt], seed0=0)
    assert batch[7] == alone[0]  # same seed (7) and prompt, other batch-mates and position
    assert _generate(engine, [prompt], seed0=8) != alone
    cut = engine.generate([Request(prompt, Sampling(1.0, 0.99, 10), 7)])[0]
    assert cut.finish_reason == "length" and cut.text == alone[0][:40] and cut.completion_tokens == 10


def test_models_are_taken_as_written(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("simulate must resolve nothing")

    monkeypatch.setattr(model_identity, "hub_commit", refuse)
    monkeypatch.setattr(model_identity, "folder_digest", refuse)
    from scalequest_dataset.stages import STAGES

    config = resolve_config("scalequest-math", engine="simulate")
    assert STAGES["solvability"](config).models()["judge"].identity() == {"id": "Qwen/Qwen2-Math-7B-Instruct",
                                                                          "revision": "main"}
    tiny = resolve_config("tiny", ["stages.solvability.model={id: builtin:tiny, revision: v2}"], engine="simulate")
    assert STAGES["solvability"](tiny).models()["judge"].identity() == {"id": "builtin:tiny", "revision": "v2"}


def _run(root: Path, workers: int = 1) -> RunLayout:
    config = resolve_config("scalequest-math", PAPER, engine="simulate")
    backend = LocalBackend(pool=EnginePool()) if workers == 1 else LocalBackend(workers=workers)
    with backend:
        Runner(root, config, backend, show_progress=False, say=lambda _: None).run(None)
    return RunLayout(root)


@pytest.fixture(scope="module")
def paper(tmp_path_factory) -> RunLayout:
    return _run(tmp_path_factory.mktemp("paper"))


def test_paper_preset_runs_every_stage_with_a_real_funnel(paper):
    config = resolve_config("scalequest-math", PAPER, engine="simulate")
    manifests = {s: rec.read(Manifest, paper.manifest(s)) for s in config.stage_names()}
    assert list(manifests) == ["questions", "language", "dedup", "decontamination", "solvability", "difficulty",
                               "responses", "reward", "default"]
    drops = {s: m.counts.dropped for s, m in manifests.items()}
    for stage, reason in [("language", "non-ascii"), ("solvability", "unsolvable"),
                          ("difficulty", "easy-sampled-out"), ("responses", "no-final-answer")]:
        assert drops[stage].get(reason), (stage, drops[stage])
    assert manifests["default"].rows("train") > 0
    # No empty files (reward refused nothing: it has no `dropped` file at all), and `default`, one row per question,
    # is cut by its output rows: every shard but the last holds rows_per_shard questions.
    for stage, m in manifests.items():
        assert all(f.rows for s in m.shards for split, f in s.files.items() if split != "train"), stage
    assert "dropped" not in manifests["reward"].splits()
    assert [f.rows for f in manifests["default"].split_files("train")][:-1] == [16] * (len(manifests["default"].shards) - 1)
    assert len(manifests["default"].shards) > 1
    # The whole-input passes at plan time are in the cost table (issue 22: they were missing).
    assert all(manifests[s].execution.cost.plan_seconds > 0 for s in ("dedup", "decontamination"))
    from scalequest_dataset.run.funnel import format_cost

    table = format_cost(manifests).splitlines()
    assert "plan s" in table[0] and float(table[4].split()[1]) > 0  # decontamination's row
    text = paper.manifest("reward").read_text(encoding="utf-8")
    assert '"internlm/internlm2-7b-reward"' in text and re.search(r'"engine": "simulate"', text)


def test_paper_preset_rerun_with_two_workers_gives_the_same_bytes(paper, tmp_path):
    """A re-run, in two worker processes (shards in another order, engines in other processes): every file the
    in-process run wrote, byte for byte."""
    reference = data_files(paper.root)
    assert len(reference) > 30
    assert data_files(_run(tmp_path / "two", workers=2).root) == reference


def test_paper_preset_publishes_loads_and_diffs(paper, tmp_path):
    import scalequest_dataset
    from scalequest_dataset.diffing.compare import diff
    from scalequest_dataset.revisions.publish import publish

    store = tmp_path / "store"
    results = publish(paper.root, store)
    assert [r.stage for r in results][-1] == "default"
    ds = scalequest_dataset.load_dataset(store, "default", revision="v1")
    assert ds.num_rows == rec.read(Manifest, paper.manifest("default")).rows("train")
    assert diff(str(paper.root), f"{store}@v1", stage="default").identical
    assert scalequest_dataset.load_dataset(store, "reward", revision="v1-reward", split="dropped").num_rows == 0
