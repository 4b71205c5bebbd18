"""What the CLI says when a command fails: one line naming the thing and the fix, and a distinct exit code.

2 is for what the user can fix (usage, input, environment): our own errors (a config field, a stage, a store, a
file) and the common mistakes that reach us as library exceptions - the Hub unreachable, no or a refused token,
a dataset that is not on the Hub, no space left on a device (ENOSPC, wherever it is raised, even as text in a
worker's report). 3 is for everything else: a bug or a condition nobody foresaw, reported with the log that
holds the traceback."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path

from .console import existing_parent, free_space, human_size

USAGE, FAILURE = 2, 3
_NO_SPACE = re.compile(r"No space left on device(?::\s*'([^']+)')?")
_UNREACHABLE = {"ConnectError", "ConnectTimeout", "TransportError", "ConnectionError", "OfflineModeIsEnabled",
                "Timeout", "ReadTimeout", "NameResolutionError", "MaxRetryError"}


def explain(exc: BaseException, args: Namespace | None = None) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that ended a command."""
    from .recipe.params import ConfigError
    from .revisions.stores import StoreError
    from .revisions.stores.base import PartialPublish
    from .run.plan import ShardFailed, StageError

    if isinstance(exc, PartialPublish) and exc.__cause__ is not None:  # the cause's exit code, the whole story
        return explain(exc.__cause__, args)[0], str(exc)
    if (space := _no_space(exc)) is not None:
        return USAGE, no_space_message(space, args)
    if isinstance(exc, ShardFailed):
        return FAILURE, str(exc)
    if isinstance(exc, (ConfigError, StoreError, StageError)):
        return USAGE, str(exc)
    if isinstance(exc, FileNotFoundError):
        return USAGE, str(exc) if not exc.filename else f"{exc.filename}: no such file or directory"
    if isinstance(exc, PermissionError):
        return USAGE, f"{exc.filename or exc}: permission denied (choose a place you can write, or fix its mode)"
    for e in _chain(exc):
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            return USAGE, (f"the Hub refused the request ({status}): no valid token for this repository; set "
                           "HF_TOKEN or run `hf auth login` (a token needs write access to publish)")
        if _names(e) & {"DatasetNotFoundError", "RepositoryNotFoundError"}:
            return USAGE, f"{e} (check the name, and that your token can see it)"
        if _names(e) & _UNREACHABLE and not isinstance(e, BrokenPipeError):
            return USAGE, (f"the Hub at {_endpoint()} is unreachable ({type(e).__name__}); check the network or "
                           "proxy, or work offline (HF_HUB_OFFLINE=1) with run directories and local stores")
    return FAILURE, f"{type(exc).__name__}: {exc}"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes (raise ... from, and the one being handled when it was raised)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _no_space(exc: BaseException) -> str | None:
    """The path a write ran out of space on ("" when unknown), or None when this is not ENOSPC."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return str(e.filename or "")
        if (found := _NO_SPACE.search(str(e))) is not None:  # pyarrow, or a worker's report as text
            return found.group(1) or ""
    return None


def no_space_message(path: str, args: Namespace | None) -> str:
    """Which device is full, how much it has free and how much the command needs (where known), and how to go
    on: what was written before is kept (shards and files are written atomically)."""
    where = Path(path) if path else _command_path(args)
    free = free_space(where)
    needed = _needed(args)
    need = f"; it needs about {human_size(needed)}" if needed else ""
    return (f"no space left on the device holding {where} ({free}{need}): free some space or move {_knob(where, args)}"
            f" elsewhere, then run the same command again (what was already written is kept)")


def _command_path(args: Namespace | None) -> Path:
    for name in ("out", "scratch", "to", "run_dir", "dir"):
        value = getattr(args, name, None)
        if value and not str(value).startswith("hf://"):
            return Path(value)
    from .recipe.models import cache_dir

    return cache_dir()


def _needed(args: Namespace | None) -> int | None:
    """What `publish` writes at most (the stages' files): the one command whose need is known up front."""
    if args is None or getattr(args, "command", None) != "publish":
        return None
    try:
        from .run import RunLayout
        from .run.plan import read_manifest
        from .stages import STAGE_ORDER

        layout = RunLayout(args.run_dir)
        stages = args.stage or layout.complete_stages(STAGE_ORDER)
        return sum(f.bytes for s in stages if (m := read_manifest(layout, s)) for f in m.files().values())
    except Exception:  # an estimate must never hide the real message
        return None


def _knob(path: Path, args: Namespace | None) -> str:
    """The setting that moves `path`: the command's own option (--out, --to, --scratch) when the path is under it,
    else the cache, Hugging Face's home or the temporary directory."""
    from .recipe.models import cache_dir

    resolved = existing_parent(path)
    options = (("out", "--out"), ("to", "--to"), ("scratch", "--scratch"), ("run_dir", "the run directory"),
               ("dir", "the target folder"))
    roots = [(Path(value), knob) for name, knob in options
             if (value := getattr(args, name, None)) and not str(value).startswith("hf://")]
    roots += [(cache_dir(), "the cache (SCALEQUEST_CACHE)"),
              (Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")), "HF_HOME"),
              (Path(tempfile.gettempdir()), "TMPDIR")]
    for root, knob in roots:
        base = existing_parent(root)
        if base != Path("/") and resolved.is_relative_to(base):
            return knob
    return "it"
