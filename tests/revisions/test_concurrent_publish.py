"""Two publishers at once (issue 19), as two real `scalequest publish` processes, into one local store and into
the local Hub server: both pass the tag-clash check before either commits (a barrier holds each until the other
got there), so the check and the tag creation would interleave if they could. Publishing other rows under the
same prefix, exactly one wins every tag and the other is refused in one line naming the tag; publishing the same
rows, both succeed with one commit between them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.runs import CLI, cli_env, tiny_run

STAGE = "questions"

# Each publisher, once past its clash check and before its commit, waits for the other to get that far.
BARRIER = '''
import os, time
from pathlib import Path
import scalequest_dataset.revisions.publish as publish
real = publish._commit_stage
def _commit_stage(*args, **kwargs):
    here = Path(os.environ["SCALEQUEST_TEST_BARRIER"])
    (here / str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(here.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    return real(*args, **kwargs)
publish._commit_stage = _commit_stage
'''


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pool) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {"a": tiny_run(root / "a", pool, stages=[STAGE]).root,
            "b": tiny_run(root / "b", pool, "seed=1", stages=[STAGE]).root}


def race(runs: list[Path], target: str, tmp_path: Path, env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    hooks, barrier = tmp_path / "hooks", tmp_path / "barrier"
    hooks.mkdir()
    barrier.mkdir()
    (hooks / "sitecustomize.py").write_text(textwrap.dedent(BARRIER))
    env = {**env, "SCALEQUEST_TEST_BARRIER": str(barrier), "PYTHONPATH": f"{hooks}:{env['PYTHONPATH']}"}
    procs = [subprocess.Popen([*CLI, "publish", str(run), "--to", target, "--no-progress"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for run in runs]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    assert len(list(barrier.iterdir())) == 2  # both got past their clash check before either committed
    return done


def state(target: str) -> dict:
    """What the store holds after the race (a client of the store: for the Hub, run in a client process)."""
    from scalequest_dataset.revisions.locator import StoreSource
    from scalequest_dataset.revisions.stores import open_store

    store = open_store(target)
    tags = store.tags()
    manifest = StoreSource(store, tags[f"v1-{STAGE}"]).manifests()[STAGE] if f"v1-{STAGE}" in tags else None
    return {"tags": tags, "head": store.head(), "titles": [c.title for c in store.commits()],
            "content": manifest.content if manifest else None}


def check_other_rows(done: list[subprocess.CompletedProcess], held: dict) -> None:
    codes = sorted(p.returncode for p in done)
    assert codes == [0, 2], [p.stderr for p in done]
    loser = next(p for p in done if p.returncode == 2)
    errors = [line for line in loser.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"tag 'v1-{STAGE}' already exists" in errors[0], loser.stderr
    assert list(held["tags"]) == [f"v1-{STAGE}"]  # the winner's tag
    winner = next(p for p in done if p.returncode == 0)
    run = Path(winner.args[winner.args.index("publish") + 1])
    assert held["content"] == json.loads((run / "manifests" / f"{STAGE}.json").read_text())["content"]


def check_same_rows(done: list[subprocess.CompletedProcess], held: dict) -> None:
    assert [p.returncode for p in done] == [0, 0], [p.stderr for p in done]
    assert sum(t.startswith(f"Publish stage {STAGE}") for t in held["titles"]) == 1  # one commit between them
    assert held["tags"] == {f"v1-{STAGE}": held["head"]}


@pytest.mark.parametrize("same", [False, True], ids=["other-rows", "same-rows"])
def test_two_publishers_into_one_local_store(runs, tmp_path, same):
    store = str(tmp_path / "store")
    done = race([runs["a"], runs["a"] if same else runs["b"]], store, tmp_path, cli_env())
    check_same_rows(done, state(store)) if same else check_other_rows(done, state(store))


def test_two_publishers_into_one_hub_repo(runs, hub, run_client, tmp_path):
    target = "hf://datasets/scalequest/race"
    done = race([runs["a"], runs["b"]], target, tmp_path, hub.client_env(tmp_path / "hf_home", cli_env()))
    check_other_rows(done, run_client(__file__, "state", target))
    assert hub.errors == []


if __name__ == "__main__":  # client side: `run_client` starts this file with (function, JSON args, result path)
    result = globals()[sys.argv[1]](*json.loads(sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps(result))
