"""Issue 22: self-consistency difficulty works out answers while the engine generates (recipe.answers.GroupedAnswers
fed by the engines' `done`). The bytes equal those of answers worked out after the engine call, in request order (the
path before the overlap), with the transformers engine (tiny) and the simulated one (the paper preset, with a
self-consistency reward as well); the time on answers is in each shard's execution and the cost table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from support.runs import data_files, tiny_run

from scalequest_dataset.engines import EnginePool
from scalequest_dataset.recipe.answers import extract_answer
from scalequest_dataset.recipe.config import resolve_config
from scalequest_dataset.run import RunLayout, Runner
from scalequest_dataset.run import records as rec
from scalequest_dataset.run.backends.local import LocalBackend
from scalequest_dataset.run.funnel import format_cost
from scalequest_dataset.run.records import Manifest
from scalequest_dataset.stages import difficulty

TINY_STAGES = ["questions", "language", "dedup", "solvability", "difficulty"]
# More and longer samples than the preset's: the random model then writes "The answer is" in some samples (not in
# all, not at mirrored positions), so the answers' values and order are in the bytes compared.
TINY = ["stages.difficulty.samples=8", "stages.difficulty.max_tokens=64", "stages.difficulty.temperature=1.0"]
PAPER = ["stages.questions.generators.0.count=40", "stages.questions.generators.1.count=40", "rows_per_shard=16",
         "stages.reward.method=self-consistency"]


class SerialAnswers:
    """The path before the overlap: the completions' texts kept as the engine reports them, every answer and
    agreement worked out after the engine call returns, in request order."""

    def __init__(self, rows: int, k: int, per_row: Any) -> None:
        self.rows, self.k, self.per_row = rows, k, per_row
        self.texts: dict[int, str | None] = {}
        self.seconds = 0.0

    def add(self, i: int, text: str | None) -> None:
        self.texts[i] = text

    def results(self) -> tuple[list[list[str | None]], list[Any]]:
        texts = [self.texts[i] for i in range(self.rows * self.k)]  # KeyError: a completion never reported
        answers = [[extract_answer(t) if t is not None else None for t in texts[r * self.k:(r + 1) * self.k]]
                   for r in range(self.rows)]
        return answers, [self.per_row(a) for a in answers]


def _paper(root: Path) -> RunLayout:
    config = resolve_config("scalequest-math", PAPER, engine="simulate")
    with LocalBackend(pool=EnginePool()) as backend:
        Runner(root, config, backend, show_progress=False, say=lambda _: None).run(None)
    return RunLayout(root)


def _manifest(layout: RunLayout, stage: str) -> Manifest:
    return rec.read(Manifest, layout.manifest(stage))


def test_tiny_run_overlapped_answers_write_the_bytes_of_answers_after_the_call(tmp_path, pool, monkeypatch):
    overlapped = tiny_run(tmp_path / "overlap", pool, *TINY, stages=TINY_STAGES)
    with monkeypatch.context() as m:
        m.setattr(difficulty, "GroupedAnswers", SerialAnswers)
        serial = tiny_run(tmp_path / "serial", pool, *TINY, stages=TINY_STAGES)
    files = data_files(overlapped.root)
    answers = [a for p in sorted((overlapped.root / "data" / "difficulty").glob("*.parquet"))
               for row in pq.read_table(p).column("difficulty_answers").to_pylist() for a in row]
    assert any(answers) and not all(answers)
    assert files == data_files(serial.root)
    m = _manifest(overlapped, "difficulty")
    assert all(s.answer_seconds > 0 for s in m.execution.shards)
    assert m.execution.cost.answer_seconds == round(sum(s.answer_seconds for s in m.execution.shards), 6)


def test_simulated_paper_run_overlapped_answers_write_the_bytes_of_answers_after_the_call(tmp_path, monkeypatch):
    overlapped = _paper(tmp_path / "overlap")
    with monkeypatch.context() as m:
        m.setattr(difficulty, "GroupedAnswers", SerialAnswers)
        serial = _paper(tmp_path / "serial")
    files = data_files(overlapped.root)
    assert any("reward" in name for name in files) and any("difficulty" in name for name in files)
    assert files == data_files(serial.root)
    manifests = {s: _manifest(overlapped, s) for s in ("questions", "difficulty", "reward")}
    assert manifests["questions"].execution.cost.answer_seconds == 0  # no answers in it
    assert manifests["difficulty"].execution.cost.answer_seconds > 0
    assert manifests["reward"].execution.cost.answer_seconds > 0  # self-consistency reward: answers are its work
    table = format_cost(manifests).splitlines()
    assert "answers s" in table[0]
    assert [line.split()[5] for line in table[1:]] == [f"{m.execution.cost.answer_seconds:.1f}"
                                                         for m in manifests.values()]
