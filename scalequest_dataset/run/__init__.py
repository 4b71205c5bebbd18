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

from .layout import RunLayout
from .plan import StageError, load_config
from .runner import Runner, ShardSlice, finalize, status
from .worker import run_shard

__all__ = ["RunLayout", "Runner", "ShardSlice", "StageError", "finalize", "load_config", "run_shard", "status"]
