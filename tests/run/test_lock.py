"""A run directory is locked for as long as a process runs stages in it (issue 19): a second `run` is refused at
once, in one line naming the holder (pid, host), and changes nothing; slices of a Slurm array share it."""

from __future__ import annotations

import os
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from support.runs import CLI, cli_env

from scalequest_dataset.run import RunLayout
from scalequest_dataset.run.lock import RunDirectoryBusy, RunLock


def lock(root: Path, what: str, slice_name: str | None = None) -> RunLock:
    held = RunLock(RunLayout(root), what, slice_name).acquire()
    held.announce()
    return held


def test_a_second_holder_is_refused_naming_the_first_until_it_lets_go(tmp_path):
    first = lock(tmp_path, "`run` of questions")
    with pytest.raises(RunDirectoryBusy) as refused:
        lock(tmp_path, "`run` of language")
    message = str(refused.value)
    assert f"pid {os.getpid()} on {socket.gethostname()} runs `run` of questions" in message
    assert "\n" not in message and "nothing was changed" in message
    with pytest.raises(RunDirectoryBusy):
        lock(tmp_path, "slice", "0-of-2")  # a slice waits for no whole run either
    first.release()
    assert (tmp_path / "state" / "lock").read_bytes() == b""  # no stale holder left to name
    lock(tmp_path, "`run` of language").release()


def test_slices_share_the_directory_but_each_runs_once(tmp_path):
    a, b = lock(tmp_path, "slice 0/2", "0-of-2"), lock(tmp_path, "slice 1/2", "1-of-2")
    with pytest.raises(RunDirectoryBusy, match="runs slice 0/2"):
        lock(tmp_path, "slice 0/2 again", "0-of-2")
    with pytest.raises(RunDirectoryBusy) as refused:
        lock(tmp_path, "`finalize`")  # a whole run or finalize: refused while any slice runs, naming them all
    assert "runs slice 0/2" in str(refused.value) and "runs slice 1/2" in str(refused.value)
    a.release()
    with pytest.raises(RunDirectoryBusy, match="runs slice 1/2"):
        lock(tmp_path, "`finalize`")
    b.release()
    lock(tmp_path, "`finalize`").release()


# The first run's worker waits, inside its first shard, until the test lets it go.
PAUSE = '''
import os, time
from pathlib import Path
import scalequest_dataset.run.worker as worker
real = worker.write_rows
def write_rows(path, rows, features):
    Path(os.environ["SCALEQUEST_TEST_PAUSED"]).touch()
    while not Path(os.environ["SCALEQUEST_TEST_GO"]).exists():
        time.sleep(0.05)
    return real(path, rows, features)
worker.write_rows = write_rows
'''


def test_a_second_run_on_a_busy_directory_is_refused_in_one_line_and_changes_nothing(tmp_path):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(PAUSE))
    out, paused, go = tmp_path / "run", tmp_path / "paused", tmp_path / "go"
    env = cli_env(SCALEQUEST_TEST_PAUSED=str(paused), SCALEQUEST_TEST_GO=str(go))
    env["PYTHONPATH"] = f"{hooks}:{env['PYTHONPATH']}"
    argv = [*CLI, "run", "--preset", "tiny", "--out", str(out), "--stage", "questions", "--no-progress"]
    first = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not paused.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        before = _files(out)
        second = subprocess.run(argv, env=cli_env(), capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
        assert f"pid {first.pid} on {socket.gethostname()}" in errors[0] and str(out) in errors[0], errors[0]
        assert _files(out) == before  # the refused run wrote nothing (not even into the config)
        go.touch()
        assert first.wait(timeout=300) == 0, first.communicate()
    finally:
        go.touch()
        first.kill() if first.poll() is None else None


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "logs" not in p.parts and not p.name.startswith("lock")}
