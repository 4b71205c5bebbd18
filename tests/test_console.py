"""The terminal is for people, the log for engines: while `console.capture` holds, whatever reaches fds 1 and 2 -
C code writing straight to them, Python's print, warnings and logging, child processes - goes to the log, and
only `console.out/err` reach the terminal; `verbose` copies the log to the terminal too; everything is restored
on exit, errors included. Stores report their transfers to whoever listens."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalequest_dataset import console
from scalequest_dataset.revisions.stores.base import reporting_transfers


def noisy_engine() -> None:
    """Every way an engine or a library writes: fds directly (as C code does), Python streams, warnings, logging,
    a child process that inherits the descriptors."""
    os.write(1, b"INFO 11-24 engine.py:42] fd 1 from C\n")
    os.write(2, b"libtcmalloc: large alloc 123456 bytes\n")
    print("python stdout line")
    print("python stderr line", file=sys.stderr)
    warnings.warn("torch.distributed.reduce_op is deprecated", FutureWarning, stacklevel=1)
    logging.getLogger("some.library").warning("a library WARNING record")
    subprocess.run([sys.executable, "-c", "import sys; print('child stdout'); print('child stderr', file=sys.stderr)"],
                   check=True)


ENGINE_LINES = ("fd 1 from C", "libtcmalloc", "python stdout line", "python stderr line", "reduce_op is deprecated",
                "a library WARNING record", "child stdout", "child stderr")


@contextlib.contextmanager
def process_streams() -> Iterator[None]:
    """sys.stdout and sys.stderr writing to fds 1 and 2, as in a real `scalequest` process (pytest's stand-ins
    bypass the descriptors, and it puts them back before every test phase: so this runs inside the test)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (open(fd, "w", buffering=1, closefd=False) for fd in (1, 2))
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = saved


def fds() -> tuple[tuple[int, int], tuple[int, int]]:
    return tuple((os.fstat(fd).st_dev, os.fstat(fd).st_ino) for fd in (1, 2))  # type: ignore[return-value]


def test_engine_output_goes_to_the_log_and_ours_to_the_terminal(tmp_path, capfd):
    log = tmp_path / "logs" / "scalequest.log"
    before = fds()
    with process_streams(), console.capture(log, title="scalequest test"):
        console.out("result for the user")
        console.err("note for the user")
        noisy_engine()
        assert console.log_path() == log
    assert fds() == before
    terminal = capfd.readouterr()
    assert terminal.out == "result for the user\n"
    assert terminal.err == "note for the user\n"
    text = log.read_text()
    assert text.startswith("==== ") and "scalequest test" in text
    for line in ENGINE_LINES:
        assert line in text, line
    assert "result for the user" not in text


def test_verbose_shows_engine_output_too(tmp_path, capfd):
    log = tmp_path / "run.log"
    with process_streams(), console.capture(log, verbose=True):
        noisy_engine()
        console.out("result")
    terminal = capfd.readouterr()
    for line in ENGINE_LINES:
        assert line in terminal.out + terminal.err, line
        assert line in log.read_text(), line
    assert "result" in terminal.out


def test_everything_is_restored_after_an_error_and_the_traceback_is_logged(tmp_path, capfd):
    log = tmp_path / "run.log"
    before = fds()
    handlers = list(logging.getLogger().handlers)
    with pytest.raises(RuntimeError, match="boom"):
        with process_streams(), console.capture(log):
            os.write(2, b"engine noise before the crash\n")
            raise RuntimeError("boom")
    assert fds() == before
    assert console.log_path() is None and console.last_log() == log
    print("after")
    assert capfd.readouterr().out == "after\n"
    text = log.read_text()
    assert "engine noise before the crash" in text and "Traceback" in text and "RuntimeError: boom" in text
    assert logging.getLogger().handlers == handlers  # the capture's log handler is gone


def test_a_log_that_cannot_be_opened_redirects_nothing(tmp_path, capfd):
    (tmp_path / "file").write_text("not a folder")
    with console.capture(tmp_path / "file" / "x.log") as log:
        assert log is None
        os.write(2, b"still on the terminal\n")
    assert "still on the terminal" in capfd.readouterr().err


class Recorder:
    def __init__(self) -> None:
        self.expected = [0, 0]
        self.moved = [0, 0]

    def expect(self, nbytes: int, files: int) -> None:
        self.expected = [self.expected[0] + nbytes, self.expected[1] + files]

    def advance(self, nbytes: int, files: int = 1) -> None:
        self.moved = [self.moved[0] + nbytes, self.moved[1] + files]


def test_stores_report_bytes_and_files(tmp_path: Path):
    from scalequest_dataset.revisions.stores.git import LocalGitStore

    store = LocalGitStore(tmp_path / "store", create=True)
    files = {"data/a.parquet": b"x" * 1000, "README.md": b"# card\n"}
    committed = Recorder()
    with reporting_transfers(committed):
        commit = store.commit(files, [], "one", parent=None)
    assert committed.expected == committed.moved == [1007, 2]
    fetched = Recorder()
    with reporting_transfers(fetched):
        store.fetch("data/a.parquet", commit, tmp_path / "a.parquet")
        store.fetch("data/a.parquet", commit, tmp_path / "b.parquet", fresh=True)
    assert fetched.moved == [2000, 2]  # a single fetch reports what it moved; its reader announces totals
    store.fetch("README.md", commit, tmp_path / "r.md")  # nobody listening: nothing to report, no error


def test_the_transfer_bar_stays_off_the_terminal_when_it_is_not_one(capfd):
    bar = console.TransferBar("fetch")  # pytest's capture is a file, not a terminal
    bar.expect(10, 1)
    bar.advance(10)
    bar.close()
    assert capfd.readouterr().err == ""
