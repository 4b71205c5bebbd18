"""A run directory is locked for as long as a process runs stages in it, so two `scalequest run`s never write one
stage at once (the second used to fail later with a misleading "no such file"): the second is refused at once,
in one line naming the holder (pid, host, since when, what it runs); nothing is written.

Slices of a Slurm array (`run --shard i/N`) share the directory on purpose: each holds the lock shared, plus its
own slice exclusively, so slices run side by side, a slice runs once at a time, and a whole run (or `finalize`,
or `--plan-only`) waits for none of them but is refused while any holds it.

The lock is `flock` on a file under RUN/state/ (for a run directory on an object store, under this machine's
local folder for it; released by the kernel when its process ends, however it ends,
so a killed run never leaves a stale lock). A file system without locks (some NFS mounts) runs unlocked, with a
warning. Who holds it is written into the lock file (`announce`, once the holder's config is adopted) for the
refusal to name, and wiped when it lets go: a run refused for its config leaves every byte as it was."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from .layout import RunLayout
from .plan import StageError


class RunDirectoryBusy(StageError):
    """Another process runs stages in this run directory now."""


class RunLock:
    """Held from `acquire` until `release` (or the process ends)."""

    def __init__(self, layout: RunLayout, what: str, slice_name: str | None = None) -> None:
        self.layout, self.what, self.slice_name = layout, what, slice_name
        self._files: list[int] = []
        self._announced = False

    @property
    def _folder(self) -> Path:
        # An object store has no locks: a run directory on one (a URL) is locked in this machine's local folder
        # for it, so two runs on one machine exclude each other (on two machines, whole-object writes of the same
        # bytes and the plan's exclusive create keep the run sound).
        return self.layout.local / "state"

    def _path(self, name: str) -> Path:
        return self._folder / name

    def acquire(self, warn: Callable[[str], None] | None = None) -> RunLock:
        """Take the lock (shared for a slice, exclusive otherwise) or raise RunDirectoryBusy naming the holder."""
        if self.layout.remote:  # an object store has no flock: two runs there still write whole, identical objects
            (warn or (lambda _: None))(f"warning: {self.layout.root} is on an object store, which has no file locks; "
                                       "running unlocked (do not start a second run on this directory)")
            return self
        self._folder.mkdir(parents=True, exist_ok=True)
        try:
            main = self._take("lock", fcntl.LOCK_SH if self.slice_name else fcntl.LOCK_EX)
            if main is None:
                raise RunDirectoryBusy(self._busy(self._holders()))
            self._files.append(main)
            if self.slice_name:
                mine = self._take(f"lock-slice-{self.slice_name}", fcntl.LOCK_EX)
                if mine is None:
                    raise RunDirectoryBusy(self._busy([self._holder(f"lock-slice-{self.slice_name}")]))
                self._files.append(mine)
        except OSError as exc:
            self.release()
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            (warn or (lambda _: None))(f"warning: {self._folder} does not support file locks; running unlocked "
                                       "(do not start a second run on this directory)")
        except BaseException:
            self.release()
            raise
        return self

    def announce(self) -> None:
        """Say who holds the lock (pid, host, what, since), in the file a refused process reads."""
        if self._files:
            info = {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what,
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            os.ftruncate(self._files[-1], 0)
            os.pwrite(self._files[-1], json.dumps(info).encode(), 0)
            self._announced = True

    def release(self) -> None:
        if self._announced and self._files:
            os.ftruncate(self._files[-1], 0)  # no stale holder for the next refusal to name
        self._announced = False
        for fd in reversed(self._files):
            os.close(fd)  # closing the file releases its flock
        self._files.clear()

    def _take(self, name: str, mode: int) -> int | None:
        fd = os.open(self._path(name), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _holder(self, name: str) -> dict | None:
        try:
            return json.loads(self._path(name).read_bytes() or b"null")
        except (OSError, ValueError):
            return None

    def _holders(self) -> list[dict | None]:
        """Who holds the directory: its exclusive holder, else every slice whose lock is taken now."""
        held = [self._holder("lock")]
        slices = []
        for path in sorted(self._folder.glob("lock-slice-*")):
            probe = self._take(path.name, fcntl.LOCK_EX)
            if probe is None:
                slices.append(self._holder(path.name))
            else:
                os.close(probe)
        return slices or held

    def _busy(self, holders: list[dict | None]) -> str:
        named = "; ".join(_describe(h) for h in holders)
        return (f"{self.layout.root} is in use: {named}. Wait for it to finish (or stop it), then run this again; "
                "nothing was changed here")


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process (it has not said which yet)"
    return f"pid {holder.get('pid')} on {holder.get('host')} runs {holder.get('what')} since {holder.get('since')}"
