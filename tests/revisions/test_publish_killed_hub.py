"""test_publish_killed's kills against the Hub store (the local Hub server): a `scalequest publish --to
hf://datasets/...` SIGKILLed after the first stage's commit and tag, and after the second stage's files were
uploaded but before its commit. The repository must not show the version complete (the last stage's tag is
absent, `log` does not list it), and the same command run again must complete it: every stage's data and figures
at every tag as a publish that was never killed, and the same commits."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_publish_killed import kill_on_call, scalequest
from test_publish_versions import runs, tree  # noqa: F401  (the module's fixture: tiny runs of three stages)

KILLERS = {
    "after-first-stage": kill_on_call("scalequest_dataset.revisions.stores.hub:HubStore", "commit"),
    # the second stage's LFS files are on the server; its commit never comes
    "after-upload-before-commit": kill_on_call("huggingface_hub:HfApi", "create_commit"),
}


def hub_scalequest(hub, home: Path, *args: str, killer: str = "") -> subprocess.CompletedProcess:
    return scalequest(*args, killer=killer, env=hub.client_env(home))


def _state(target: str) -> dict:
    """Client side: the repository's tags, what each holds (data and figures) and its commit titles."""
    from scalequest_dataset.revisions.stores import open_store

    store = open_store(target)
    return {"tags": sorted(store.tags()), "trees": {tag: tree(store, tag) for tag in store.tags()},
            "titles": [c.title for c in store.commits()]}


@pytest.mark.parametrize("where", sorted(KILLERS))
def test_a_hub_publish_killed_half_way_is_not_shown_complete_and_the_same_command_completes_it(
        runs, hub, run_client, tmp_path, where):  # noqa: F811
    clean, target = f"hf://datasets/scalequest/clean-{where}", f"hf://datasets/scalequest/killed-{where}"
    assert hub_scalequest(hub, tmp_path / "a", "publish", str(runs["v1"]), "--to", clean).returncode == 0
    killed = hub_scalequest(hub, tmp_path / "b", "publish", str(runs["v1"]), "--to", target, killer=KILLERS[where])
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    half = run_client(__file__, "_state", target)
    assert half["tags"] == ["v1-questions"]  # the last stage's tag marks a complete version: absent
    log = hub_scalequest(hub, tmp_path / "c", "log", target)
    assert log.returncode == 0, log.stderr[-3000:]
    assert "v1-dedup" not in log.stdout

    again = hub_scalequest(hub, tmp_path / "d", "publish", str(runs["v1"]), "--to", target)
    assert again.returncode == 0, again.stderr[-3000:]
    done, reference = run_client(__file__, "_state", target), run_client(__file__, "_state", clean)
    assert done["tags"] == reference["tags"] == ["v1-dedup", "v1-language", "v1-questions"]
    assert done["trees"] == reference["trees"]  # every stage's files, byte for byte (sha256), at every tag
    assert done["titles"] == reference["titles"]  # no extra commit, none missing
    assert hub.errors == []


if __name__ == "__main__":  # client side: `run_client` starts this file with (function, JSON args, result path)
    result = globals()[sys.argv[1]](*json.loads(sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps(result))
