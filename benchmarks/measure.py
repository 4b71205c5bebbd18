"""Run a Python snippet in a fresh process and report its wall time and peak memory.

Peak memory is the process's own high-water RSS (VmHWM, reset by exec). getrusage's ru_maxrss is not:
Linux carries it across fork+exec, so a child would report its parent's peak (here, the parent that
built the synthetic 1M-row run)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_WRAPPER = """
import json, sys, time
t = time.perf_counter()
{code}
_hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("__MEASURE__" + json.dumps({{"seconds": time.perf_counter() - t, "peak_rss_mb": int(_hwm.split()[1]) / 1024}}))
"""


def measure(code: str, env: dict[str, str] | None = None) -> dict[str, float]:
    """Seconds of the snippet itself (imports included), the process's peak RSS in MiB, and its CPU seconds
    (start-up included)."""
    script = _WRAPPER.format(code=textwrap.dedent(code))
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=full_env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-4000:])
    line = next(x for x in res.stdout.splitlines() if x.startswith("__MEASURE__"))
    out = json.loads(line.removeprefix("__MEASURE__"))
    out["process_seconds"] = time.perf_counter() - started
    # CPU seconds of the whole process (every thread, user + system): on a shared machine, steadier than wall time
    out["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {k: round(v, 2) for k, v in out.items()}
