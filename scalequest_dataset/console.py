"""The terminal is for people, the log file for engines.

While a command runs, `capture(log)` points file descriptors 1 and 2 at a log file. Everything engines and
libraries print lands there: vLLM's `INFO` lines (its handler writes to `sys.stdout`, i.e. fd 1), warnings that
C libraries write straight to fd 2 (libtcmalloc, NUMA, Triton), Python warnings, transformers' load reports
and nested progress bars, and the output of child processes, which inherit the descriptors. Our own output -
messages, progress bars, results - goes to duplicates of the terminal's descriptors taken before the switch:
`out()`, `err()` and `stream()`. With `verbose`, a thread copies what the log receives to the terminal too.
Everything is restored on exit, errors included.

Without a capture (a library user calling the API, a test), `out()` and `err()` are plain `sys.stdout` and
`sys.stderr`, so nothing here changes how the package behaves as a library."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

LOG_NAME = "scalequest"  # RUN/logs/scalequest.log
MAX_SHARED_LOG_BYTES = 16 << 20  # a per-command log outside a run directory starts over beyond this size


@dataclass
class _Capture:
    out: TextIO  # the terminal's stdout, as it was before the switch
    err: TextIO  # the terminal's stderr
    log: Path
    log_fd: int
    verbose: bool


_active: _Capture | None = None
_last_log: Path | None = None  # the log of the latest capture, for the error report after it ended


def out(text: str = "") -> None:
    """A line of results for the user (stdout of the terminal, never the log)."""
    print(text, file=_active.out if _active else sys.stdout, flush=True)


def err(text: str) -> None:
    """A line of messages for the user: notes, errors (stderr of the terminal, never the log)."""
    print(text, file=_active.err if _active else sys.stderr, flush=True)


def stream() -> TextIO:
    """Where progress bars draw: the terminal's stderr."""
    return _active.err if _active else sys.stderr


def log_path() -> Path | None:
    """The log file of the running command, if it has one."""
    return _active.log if _active else None


def last_log() -> Path | None:
    """The log of the latest capture in this process, even after it ended (where a failure's traceback is)."""
    return _last_log


def forget_last_log() -> None:
    """A new command begins (`main` called again in one process): an older log holds none of its story."""
    global _last_log
    _last_log = None


def interactive() -> bool:
    """Whether progress bars have a terminal to draw on (not a pipe or a file)."""
    try:
        return stream().isatty()
    except (AttributeError, ValueError):
        return False


def to_log(text: str) -> None:
    """A line for the log only (a traceback, a note for whoever debugs); dropped without a capture."""
    if _active is None:
        return
    with contextlib.suppress(OSError):  # a full disk must not turn a report into a second failure
        os.write(_active.log_fd, (text if text.endswith("\n") else text + "\n").encode("utf-8", "replace"))


def human_size(n: float) -> str:
    """1536 -> "1.5 KB" (powers of 1024)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def existing_parent(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (where a file would be created: its device)."""
    path = Path(path).expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_space(path: Path) -> str:
    """"12.3 GB free of 50.0 GB" on the device that holds (or would hold) `path`."""
    import shutil

    try:
        usage = shutil.disk_usage(existing_parent(path))
    except OSError:
        return "free space unknown"
    return f"{human_size(usage.free)} free of {human_size(usage.total)}"


def run_log(run_dir: str | Path) -> Path:
    """A run directory's log: every invocation on it appends (resumes keep their history)."""
    from .run.layout import RunLayout

    return RunLayout(run_dir).log(LOG_NAME)


def command_log(command: str) -> Path:
    """The log of a command that has no run directory (publish, load, diff, doctor...): under the cache."""
    from .recipe.models import cache_dir

    return cache_dir() / "logs" / f"{command}.log"


@contextlib.contextmanager
def capture(log: Path, verbose: bool = False, title: str = "") -> Iterator[Path | None]:
    """Send fds 1 and 2 (and Python's logging and warnings) to `log` until the block ends; yields the log path,
    or None when the log cannot be opened (then nothing is redirected: a command never fails for its log)."""
    global _active, _last_log
    if _active is not None:  # nested: the outer capture already holds the terminal
        yield _active.log
        return
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        if log.name != f"{LOG_NAME}.log" and log.is_file() and log.stat().st_size > MAX_SHARED_LOG_BYTES:
            log.unlink()
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        yield None
        return
    _flush_all()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = _Capture(_reopen(saved_out, sys.stdout), _reopen(saved_err, sys.stderr), log, log_fd, verbose)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(log_fd, f"==== {stamp} {title or ' '.join(sys.argv)} (pid {os.getpid()})\n".encode())
    tee = _Tee(log_fd, saved_err) if verbose else None
    target = tee.write_fd if tee else log_fd
    os.dup2(target, 1)
    os.dup2(target, 2)
    _active = terminal
    _last_log = log
    restore_logging = _route_logging()
    try:
        yield log
    except BaseException:
        to_log(traceback.format_exc())  # the whole story stays in the log, whatever the terminal shows
        raise
    finally:
        restore_logging()
        _flush_all()
        _active = None
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        if tee:
            tee.close()
        for stream_ in (terminal.out, terminal.err):
            with contextlib.suppress(OSError, ValueError):
                stream_.close()  # closes saved_out / saved_err
        os.close(log_fd)


def _reopen(fd: int, like: TextIO) -> TextIO:
    """A text stream on a saved terminal descriptor, with the encoding of the stream it replaces."""
    return os.fdopen(fd, "w", buffering=1, encoding=getattr(like, "encoding", None) or "utf-8", errors="replace")


def _flush_all() -> None:
    """Python's buffers and C's stdio buffers, so nothing written before a switch lands after it."""
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            s.flush()
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(None).fflush(None)


def _route_logging() -> Any:
    """Python logging (records of libraries without their own handler) and warnings to the log, with times.
    Returns the function that undoes it."""
    handler = logging.StreamHandler(sys.stderr)  # sys.stderr writes to fd 2: the log
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    logging.captureWarnings(True)  # warnings.warn -> the "py.warnings" logger -> the log, with a time

    def restore() -> None:
        logging.captureWarnings(False)
        root.removeHandler(handler)
        root.setLevel(level)

    return restore


class _Tee:
    """`-v`: a pipe in front of the log; a thread copies what comes through to the log and to the terminal."""

    def __init__(self, log_fd: int, terminal_fd: int) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.log_fd, self.terminal_fd = log_fd, terminal_fd
        self.thread = threading.Thread(target=self._copy, name="scalequest-tee", daemon=True)
        self.thread.start()

    def _copy(self) -> None:
        while chunk := os.read(self.read_fd, 65536):
            for fd in (self.log_fd, self.terminal_fd):
                with contextlib.suppress(OSError):
                    os.write(fd, chunk)

    def close(self) -> None:
        os.close(self.write_fd)  # fds 1 and 2 point elsewhere again: the thread sees EOF
        self.thread.join(timeout=5)  # a child process still holding the pipe must not hang us
        if not self.thread.is_alive():
            os.close(self.read_fd)


class TransferBar:
    """Bytes and files of a long store operation (publish, load, fetch): one tqdm bar on the terminal, drawn only
    once something moves, and only on a terminal (never in a pipe or a log) unless progress is off. Stores report
    through `store.base.reporting_transfers(bar)`."""

    def __init__(self, desc: str, enabled: bool = True) -> None:
        self.desc = desc
        self.enabled = enabled and interactive()
        self.bytes = self.files = 0
        self.total_bytes = self.total_files = 0
        self._bar: Any = None

    def expect(self, nbytes: int, files: int) -> None:
        """More work with a known size is coming (the bar gets a total and an ETA)."""
        self.total_bytes += nbytes
        self.total_files += files
        if self._draw():
            self._bar.total = self.total_bytes or None
            self._refresh()

    def advance(self, nbytes: int, files: int = 1) -> None:
        self.bytes += nbytes
        self.files += files
        if self._draw():
            self._bar.update(nbytes)
            self._refresh()

    def _draw(self) -> bool:
        if not self.enabled:
            return False
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total_bytes or None, desc=f"{self.desc:<12}", unit="B", unit_scale=True,
                             unit_divisor=1024, file=stream(), dynamic_ncols=True, leave=False)
        return True

    def _refresh(self) -> None:
        total = f"/{self.total_files}" if self.total_files >= self.files and self.total_files else ""
        self._bar.set_postfix_str(f"{self.files}{total} files", refresh=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> TransferBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
