"""What a run directory promises its users: `status` only reads and a no-op re-run leaves every file as it was
(a refused config and new settings for stages not planned yet: test_plan.py)."""

from __future__ import annotations

import re
import subprocess

import pytest
from support.runs import CLI, cli_env, every_file, tiny_run

from scalequest_dataset.run import RunLayout, status

STAGES = ["questions", "language"]


@pytest.fixture
def run_dir(tmp_path_factory, pool):
    root = tmp_path_factory.mktemp("run")
    tiny_run(root, pool, stages=STAGES)
    return root


def test_status_only_reads(run_dir):
    before = every_file(run_dir)
    res = subprocess.run([*CLI, "status", str(run_dir)], capture_output=True, text=True, env=cli_env())
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("questions"))
    assert line.split()[1:] == ["5/5", "40", "complete"]
    assert [s.stage for s in status(RunLayout(run_dir)) if s.complete] == STAGES
    assert every_file(run_dir) == before


def test_a_no_op_rerun_leaves_every_file_as_it_was(run_dir, pool):
    before = every_file(run_dir)
    tiny_run(run_dir, pool, stages=STAGES)
    tiny_run(run_dir, pool, "engine.batch_size=3", stages=STAGES)  # throughput knobs may differ
    assert every_file(run_dir) == before


def test_unknown_stage_is_refused_before_anything_is_written(tmp_path):
    res = subprocess.run([*CLI, "run", "--preset", "tiny", "--out", str(tmp_path / "r"), "--stage", "nosuch"],
                         capture_output=True, text=True, env=cli_env())
    assert res.returncode == 2 and "nosuch" in res.stderr and "questions" in res.stderr
    assert not (tmp_path / "r").exists()


def test_each_bar_counts_the_tokens_its_engine_generates_or_reads(tmp_path, pool, monkeypatch, capsys):
    """The progress bars of a tiny run: generation stages count generated tokens, the reward model's stage the
    tokens it reads (it generates none: its bar showed 0 tok/s), stages without an engine no rate at all."""
    from scalequest_dataset.run import runner

    bars: dict[str, runner.Progress] = {}

    class Recorded(runner.Progress):
        def __init__(self, name, total_rows, enabled=True, tokens="generated"):
            super().__init__(name, total_rows, True, tokens)  # drawn (on the captured stderr)
            bars[name] = self

    monkeypatch.setattr(runner, "Progress", Recorded)
    tiny_run(tmp_path, pool)
    drawn = [line for line in re.split(r"[\r\n]", capsys.readouterr().err) if line.startswith("reward ")]
    assert re.search(r" [1-9][\d,]* read tok/s\]$", drawn[-1]), drawn[-1]  # the line the terminal keeps
    assert bars["reward"].kind == "read" and bars["reward"].tokens > 0
    assert bars["reward"].postfix().endswith(" read tok/s") and not bars["reward"].postfix().startswith("0 ")
    assert bars["questions"].kind == "generated" and bars["questions"].tokens > 0
    assert bars["questions"].postfix().endswith(" generated tok/s")
    assert bars["language"].tokens == 0 and bars["language"].postfix() == ""
