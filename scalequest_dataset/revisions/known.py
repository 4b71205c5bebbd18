"""What this machine has already verified: a file's sha256 (and its rows' count and content digest, when those were
recomputed too), keyed by the file's identity on disk (path, device, inode, size, mtime and ctime in ns), in a
small SQLite table in the cache (SCALEQUEST_CACHE/verified-files.sqlite).

It remembers only what our own code computed from the bytes, never what a revision claims, and the same way git's
index does: any write to the file moves its ctime (which no user can set), and a file younger than `SETTLE` seconds
is not remembered at all, so a file rewritten within the clock's tick cannot pass for the one we read. A second
`diff` or `load` of the same files then checks them without reading them again."""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SETTLE = 2.0  # seconds: a file changed more recently than this is verified, not remembered
_SCHEMA = ("CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, "
           "rows INTEGER, content TEXT)")


@dataclass(frozen=True)
class Known:
    sha256: str
    size: int
    rows: int | None  # None: only the bytes were hashed
    content: str | None


def _key(path: Path, st: os.stat_result) -> str:
    return f"{os.path.realpath(path)}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"


def _db() -> sqlite3.Connection | None:
    from ..recipe.models import cache_dir

    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(folder / "verified-files.sqlite", timeout=5)
        con.execute(_SCHEMA)
        return con
    except (OSError, sqlite3.Error):  # a read-only or broken cache: verify every time, remember nothing
        return None


def lookup(path: Path, st: os.stat_result) -> Known | None:
    con = _db()
    if con is None:
        return None
    try:
        with con:
            row = con.execute("SELECT sha256, size, rows, content FROM files WHERE key = ?", (_key(path, st),)).fetchone()
    except sqlite3.Error:
        return None
    finally:
        con.close()
    return Known(*row) if row else None


def remember(path: Path, st: os.stat_result, known: Known) -> None:
    """Record what was computed from the file whose identity was `st` before reading it, if it is still that file
    and has settled."""
    try:
        now = os.lstat(path)
    except OSError:
        return
    if _key(path, now) != _key(path, st) or time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 < SETTLE:
        return
    con = _db()
    if con is None:
        return
    try:
        with con:
            con.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                        (_key(path, st), known.sha256, known.size, known.rows, known.content))
    except sqlite3.Error:
        pass
    finally:
        con.close()
