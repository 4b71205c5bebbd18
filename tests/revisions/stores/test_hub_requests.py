"""The requests a Hub store makes for publish, diff and load of an N-file stage, counted at the local Hub server:
O(1) per revision plus one per file moved (an LFS upload is its PUT and the LFS protocol's verify; a download one
GET). And 429/503 answers are retried, waiting what Retry-After says."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
PER_FILE = {"PUT lfs-upload", "POST info/lfs/objects/verify", "GET resolve"}


def _synthetic(root: str, files: int) -> str:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from synthetic import make_run

    return str(make_run(Path(root), files, rows_per_shard=1, seed=files))  # no bytes shared between runs


def _publish(run: str, target: str) -> list[bool]:
    from scalequest_dataset.revisions.publish import publish

    return [r.created for r in publish(run, target)]


def _diff(a: str, b: str) -> bool:
    import scalequest_dataset

    return scalequest_dataset.diff(a, b, stage="default").identical


def _load(target: str) -> int:
    import scalequest_dataset

    return scalequest_dataset.load_dataset(target, "default", revision="v1").num_rows


def _retried(run: str, target: str) -> dict[str, Any]:
    """Publish and load with every wait recorded (not slept: the test says what it would have waited)."""
    import time

    waits: list[float] = []
    time.sleep = waits.append  # type: ignore[assignment]
    created = _publish(run, target)
    return {"created": created, "rows": _load(target), "waits": waits}


def fixed(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k not in PER_FILE}


@pytest.fixture(scope="module")
def measured(hub, run_client, tmp_path_factory) -> dict[int, dict[str, dict[str, int]]]:
    """Request counts by kind for publish, republish, diff and load of a 12-file and a 36-file stage."""
    out = {}
    for n in (12, 36):
        run = _synthetic(str(tmp_path_factory.mktemp(f"run{n}") / "run"), n)
        target = f"hf://datasets/count/n{n}"
        out[n] = {}
        for name, func, args in (("publish", "_publish", (run, target)), ("republish", "_publish", (run, target)),
                                 ("diff", "_diff", (f"{target}@v1", run)), ("load", "_load", (target,))):
            before = len(hub.requests)
            result = run_client(__file__, func, *args)
            out[n][name] = hub.counts(before)
            out[n][f"{name}_result"] = result
    if os.environ.get("SCALEQUEST_DUMP_COUNTS"):  # BENCHMARKS.md's table
        Path(os.environ["SCALEQUEST_DUMP_COUNTS"]).write_text(json.dumps(out, indent=1))
    return out


def test_publish_is_one_upload_per_file_and_a_fixed_number_of_calls(measured):
    for n, m in measured.items():
        assert m["publish_result"] == [True] and m["republish_result"] == [False]
        assert m["publish"]["PUT lfs-upload"] == n + 6  # each Parquet file once, and the card's 6 figures
        assert m["publish"].get("GET resolve", 0) == 0  # nothing is downloaded to publish into an empty repo
        assert m["publish"]["POST api/commit"] == 1  # the stage is one commit
        assert "PUT lfs-upload" not in m["republish"]  # the same data again: nothing moves
    assert fixed(measured[12]["publish"]) == fixed(measured[36]["publish"])  # O(1) whatever N
    # republishing checks the store's bytes (every file fetched and verified), and nothing else grows with N
    assert measured[36]["republish"]["GET resolve"] - measured[12]["republish"]["GET resolve"] == 36 - 12
    assert fixed(measured[12]["republish"]) == fixed(measured[36]["republish"])


@pytest.mark.parametrize("op", ["diff", "load"])
def test_diff_and_load_list_the_revision_once_and_fetch_each_file_once(measured, op):
    for n, m in measured.items():
        assert m[op]["GET api/tree"] == 1  # one listing of the revision (sizes and sha256 included)
        assert m[op]["GET resolve"] == n + 2  # each shard once, plus the card and the stage's manifest
    assert fixed(measured[12][op]) == fixed(measured[36][op])
    assert measured[12]["diff_result"] is True and measured[12]["load_result"] == 12


def test_rate_limits_and_server_errors_are_retried_as_retry_after_says(hub, run_client, tmp_path):
    run = _synthetic(str(tmp_path / "run"), 3)
    hub.fail(503, "/tree/", retry_after=7)  # the listing: huggingface_hub's http_backoff waits Retry-After + 1
    hub.fail(429, "/commit/", method="POST", retry_after=11)  # the commit: ours (`_retrying`), exactly Retry-After
    hub.fail(503, "/preupload/", retry_after=13)  # huggingface_hub's http_backoff again
    hub.fail(429, "/resolve/", times=2)  # a download, no Retry-After: exponential backoff, 1 s then 2 s
    before = len(hub.requests)
    result = run_client(__file__, "_retried", run, "hf://datasets/count/retried")
    assert result["created"] == [True] and result["rows"] == 3
    statuses = [status for _, _, status in list(hub.requests)[before:]]
    assert statuses.count(503) == 2 and statuses.count(429) == 3
    assert sorted(result["waits"]) == [1, 2, 8, 11, 14]
    assert hub.errors == []


if __name__ == "__main__":  # client side: `run_client` starts this file with (function, JSON args, result path)
    import tempfile

    os.environ["SCALEQUEST_CACHE"] = tempfile.mkdtemp()  # a fresh verified-files cache: every fetch is counted
    result = globals()[sys.argv[1]](*json.loads(sys.argv[2]))
    Path(sys.argv[3]).write_text(json.dumps(result))
