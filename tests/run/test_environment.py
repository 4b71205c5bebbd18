"""The environment never moves bytes (DESIGN.md 2): the whole `tiny` pipeline, run from the CLI under other torch
thread counts, hash seeds, locales, time zones, working directories, temporary directories and output-path
depths, writes exactly the in-process run's shards."""

from __future__ import annotations

import subprocess

import pytest
from support.runs import CLI, cli_env, data_files, tiny_run

ENVIRONMENTS = {
    "one-thread-C-locale-deep-path": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "1",
                                      "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "TZ": "Pacific/Kiritimati"},
    "two-threads-utf8-relative-path": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONHASHSEED": "4242",
                                       "LC_ALL": "C.UTF-8", "TZ": "America/St_Johns"},
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, pool) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("reference")
    tiny_run(root, pool)
    return data_files(root)


@pytest.mark.parametrize("name", sorted(ENVIRONMENTS))
def test_the_environment_moves_no_byte(tmp_path, reference, name):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    tmpdir = tmp_path / "tmp with space"
    tmpdir.mkdir()
    if name.endswith("deep-path"):
        out = tmp_path / "a" / "b" / "c" / "d" / "e" / "f" / "g" / "run"
    else:
        out = tmp_path / "relative" / "run"
    env = cli_env(TMPDIR=str(tmpdir), **ENVIRONMENTS[name])
    target = str(out) if name.endswith("deep-path") else "../relative/run"
    res = subprocess.run([*CLI, "run", "--preset", "tiny", "--out", target, "--no-progress"], cwd=cwd, env=env,
                         capture_output=True, timeout=1200)
    assert res.returncode == 0, res.stderr.decode("utf-8", "replace")[-3000:]
    assert data_files(out) == reference
