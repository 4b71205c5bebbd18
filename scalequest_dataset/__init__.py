"""scalequest-dataset: regenerate, version and audit the ScaleQuest synthetic math corpus.

The Python API, one call per user job:

    scalequest_dataset.load_dataset(path_or_repo, stage, revision=...)   # a stage at a revision
    scalequest_dataset.publish(run_dir, target)                          # every stage a revision
    scalequest_dataset.diff(a, b)                                        # what changed, and why
    scalequest_dataset.regenerate(revision, stage)                       # rebuild, compare hashes

They are imported on first use (PEP 562), so `import scalequest_dataset` stays cheap. The package reads as
wings: `recipe/` (what a run computes), `engines/`, `stages/`, `run/` (the executor), `revisions/` (stores,
publish, load, regenerate, the card), `diffing/`, and a thin shell (`cli`, `console`, `doctor`). No wing is
named like an API function: a submodule named `diff` would replace the function `diff` on the package once
imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_API = {
    "load_dataset": "revisions.load",
    "publish": "revisions.publish",
    "log": "revisions.publish",
    "diff": "diffing.compare",
    "regenerate": "revisions.regenerate",
}
__all__ = ["diff", "load_dataset", "log", "publish", "regenerate"]

if TYPE_CHECKING:
    from .diffing.compare import diff
    from .revisions.load import load_dataset
    from .revisions.publish import log, publish
    from .revisions.regenerate import regenerate


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
