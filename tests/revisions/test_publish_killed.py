"""A `scalequest publish` process SIGKILLed half way (no exception handler runs): after the first stage's commit and
tag, and inside the git store's own write (`git fast-import` fed half a stream). The store must not show the version
complete (the last stage's tag is absent), must stay usable (no stale lock), and the same command run again must
complete it, byte for byte the store of a publish that was never killed. The kill is deterministic: the child
process patches the store so that it SIGKILLs itself at that exact point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_publish_versions import runs, tree  # noqa: F401  (the module's fixture: tiny runs of three stages)

ROOT = Path(__file__).resolve().parents[2]


def kill_on_call(owner: str, method: str, call: int = 2, first: str = "") -> str:
    """Code for the publisher's process: `method` of `owner` ("module:Class") SIGKILLs the process on its `call`-th
    call, after running the statement `first` (the call's arguments are `a`)."""
    module, cls = owner.split(":")
    return f"""
from {module} import {cls}
real, calls = getattr({cls}, "{method}"), []
wrap = staticmethod if isinstance({cls}.__dict__["{method}"], staticmethod) else (lambda f: f)
def patched(*a, **k):
    calls.append(1)
    if len(calls) == {call}:
        {first or "pass"}
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*a, **k)
{cls}.{method} = wrap(patched)
"""


KILLERS = {
    # the second stage's commit: the first stage is committed and tagged, the rest is not
    "after-first-stage": kill_on_call("scalequest_dataset.revisions.stores.git:LocalGitStore", "commit"),
    # inside fast-import's stream of the second stage: one blob header written, then the publisher dies
    "inside-fast-import": kill_on_call("scalequest_dataset.revisions.stores.git:LocalGitStore", "_stream",
                                       first='a[0].write(b"blob\\nmark :1\\ndata 10\\nabc"); a[0].flush()'),
}


def scalequest(*args: str, killer: str = "", env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`scalequest ARGS` in a new process (`env`: its environment, else this one's), first running `killer`."""
    code = f"import os, signal, sys\n{killer}\nfrom scalequest_dataset.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("where", sorted(KILLERS))
def test_a_publish_killed_half_way_is_not_shown_complete_and_the_same_command_completes_it(runs, tmp_path,  # noqa: F811
                                                                                           where):
    from scalequest_dataset.revisions.stores import open_store

    clean, store_path = tmp_path / "clean", tmp_path / "store"
    assert scalequest("publish", str(runs["v1"]), "--to", str(clean)).returncode == 0
    killed = scalequest("publish", str(runs["v1"]), "--to", str(store_path), killer=KILLERS[where])
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    store = open_store(store_path)
    assert set(store.tags()) == {"v1-questions"}  # the last stage's tag marks a complete version: absent
    assert not list(store_path.rglob("*.lock"))  # nothing left that blocks the next writer
    status = scalequest("log", str(store_path))
    assert status.returncode == 0, status.stderr
    assert "v1-dedup" not in status.stdout

    again = scalequest("publish", str(runs["v1"]), "--to", str(store_path))
    assert again.returncode == 0, again.stderr
    reference = open_store(clean)
    assert set(store.tags()) == set(reference.tags())
    for tag in store.tags():  # every file of every stage at every tag
        assert tree(store, tag) == tree(reference, tag)
    assert [c.title for c in store.commits()] == [c.title for c in reference.commits()]  # no extra commit
