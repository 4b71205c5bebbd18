"""The executor, in parts that each read alone:

- layout.py    the only code that knows a run directory's paths
- records.py   typed plan, shard record and manifest, with a JSON round trip
- plan.py      resolves once what a shard needs (pinned models, the shard plan, prepared state) and persists it
- worker.py    `run_shard(run_dir, stage, index) -> ShardRecord`: the only thing a backend calls
- finalize.py  verifies shards and writes a stage's manifest once
- backends/    where shards run: local (in-process or N processes), ray; Slurm arrays use `--shard i/N`
- runner.py    a config through its stages on a backend: adopt, plan, run, finalize; status
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Imported on first use, so that `scalequest --version` or `scalequest log` do not pay for the executor's
# dependencies (the stages, `datasets`, pandas: ~1 s of start-up).
# `finalize` the function is `runner.finalize`: imported lazily, the package attribute `finalize` would be the
# submodule finalize.py once that is loaded, so it is not exported here.
_API = {"RunLayout": "layout", "StageError": "plan", "load_config": "plan", "Runner": "runner",
        "ShardSlice": "runner", "status": "runner", "run_shard": "worker"}
__all__ = ["RunLayout", "Runner", "ShardSlice", "StageError", "load_config", "run_shard", "status"]

if TYPE_CHECKING:
    from .layout import RunLayout
    from .plan import StageError, load_config
    from .runner import Runner, ShardSlice, status
    from .worker import run_shard


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
