import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "scalequest_dataset.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--stage", "nosuchstage"], ["nosuchstage", "questions"]),
        (["--set", "stages.questions.max_tokens=lots"], ["stages.questions.max_tokens", "lots"]),
        (["--set", "stages.questions.generators.0.model=/no/such/model"], ["/no/such/model", "stages.questions.generators.tiny-a.model"]),
        (["--preset", "nosuchpreset"], ["nosuchpreset", "tiny"]),
        (["--shard", "3/2"], ["--shard"]),
    ],
)
def test_bad_config_exits_nonzero_naming_the_problem(tmp_path, args, needles):
    if "--preset" not in args:
        args = ["--preset", "tiny", *args]
    res = run_cli("run", "--out", str(tmp_path / "run"), "--no-progress", *args)
    assert res.returncode != 0
    for needle in needles:
        assert needle in res.stderr, res.stderr
    assert not list((tmp_path / "run").rglob("*.parquet"))


def test_status_of_a_non_run_dir(tmp_path):
    res = run_cli("status", str(tmp_path))
    assert res.returncode == 2
    assert "not a run directory" in res.stderr
