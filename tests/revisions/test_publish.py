"""Publishing a run to the local git store: one commit and tag per stage, loadable at each tag."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.runs import tiny_run as make_run

import scalequest_dataset
from scalequest_dataset.recipe.config import ConfigError
from scalequest_dataset.revisions.publish import log, publish
from scalequest_dataset.revisions.stores import StoreError, open_store
from scalequest_dataset.run import RunLayout
from scalequest_dataset.stages import STAGE_ORDER


def complete_stages(run_dir: Path) -> list[str]:
    return RunLayout(run_dir).complete_stages(STAGE_ORDER)


def run_rows(run_dir: Path, stage: str) -> list[dict]:
    rows = []
    for f in sorted((run_dir / "data" / stage).glob("train-*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, pool) -> Path:
    root = tmp_path_factory.mktemp("run")
    make_run(root, pool)
    return root


@pytest.fixture(scope="module")
def other_run(tmp_path_factory, pool) -> Path:
    root = tmp_path_factory.mktemp("run-seed1")
    make_run(root, pool, "seed=1")
    return root


def test_publish_loads_back_every_stage_at_its_tag(tiny_run, tmp_path):
    store_path = tmp_path / "store"
    results = publish(tiny_run, store_path)
    stages = complete_stages(tiny_run)
    assert [r.stage for r in results] == stages
    store = open_store(store_path)
    assert len(store.commits()) == len(stages)  # one commit per stage
    for r in results:
        assert store.tags()[f"v1-{r.stage}"] == r.commit
        ds = scalequest_dataset.load_dataset(store_path, r.stage, revision=f"v1-{r.stage}")
        assert ds.to_list() == run_rows(tiny_run, r.stage)
        assert ds.features == scalequest_dataset.stages.STAGES[r.stage].features
    if "default" in stages:
        assert store.tags()["v1"] == store.tags()["v1-default"]


def test_republish_makes_no_commit(tiny_run, tmp_path):
    publish(tiny_run, tmp_path / "store")
    head = open_store(tmp_path / "store").head()
    again = publish(tiny_run, tmp_path / "store")
    assert all(not r.created for r in again)
    assert open_store(tmp_path / "store").head() == head


def test_tag_clash_is_refused_before_anything_is_written(tiny_run, other_run, tmp_path):
    store_path = tmp_path / "store"
    publish(tiny_run, store_path, ["questions"])
    store = open_store(store_path)
    head, tags = store.head(), store.tags()
    with pytest.raises(StoreError, match=r"v1-questions.*already exists"):
        publish(other_run, store_path, ["questions"])
    assert (store.head(), store.tags()) == (head, tags)
    moved = publish(other_run, store_path, ["questions"], force=True)[0]
    assert store.tags()["v1-questions"] == moved.commit != tags["v1-questions"]
    ds = scalequest_dataset.load_dataset(store_path, "questions", revision="v1-questions")
    assert ds.to_list() == run_rows(other_run, "questions")
    old = scalequest_dataset.load_dataset(store_path, "questions", revision=tags["v1-questions"])
    assert old.to_list() == run_rows(tiny_run, "questions")


def test_other_prefix_versions_side_by_side(tiny_run, other_run, tmp_path):
    publish(tiny_run, tmp_path / "store", ["questions"], tag_prefix="v1")
    publish(other_run, tmp_path / "store", ["questions"], tag_prefix="v2")
    rows = {r["tag"]: r for r in log(tmp_path / "store")}
    assert set(rows) == {"v1-questions", "v2-questions"}
    assert rows["v1-questions"]["fingerprint"] != rows["v2-questions"]["fingerprint"]
    assert rows["v2-questions"]["rows"] == len(run_rows(other_run, "questions"))


def test_stale_parent_is_refused_cleanly(tmp_path):
    from scalequest_dataset.revisions.stores import StaleParentError

    store = open_store(tmp_path / "store", create=True)
    first = store.commit({"a.txt": b"1"}, [], "one", parent=None)
    store.commit({"a.txt": b"2"}, [], "two", parent=first)
    with pytest.raises(StaleParentError, match="moved"):
        store.commit({"a.txt": b"3"}, [], "three", parent=first)
    assert store.read("a.txt", "main") == b"2"
    assert len(store.commits()) == 2


def test_publish_retries_when_the_branch_moves(tiny_run, tmp_path, monkeypatch):
    from scalequest_dataset.revisions.stores.git import LocalGitStore

    store_path = tmp_path / "store"
    open_store(store_path, create=True)
    real_commit = LocalGitStore.commit
    calls = []

    def racing_commit(self, add, delete, message, parent):
        if not calls:  # someone else commits between our read and our commit
            real_commit(self, {"OTHER.md": b"x"}, [], "concurrent", parent)
        calls.append(parent)
        return real_commit(self, add, delete, message, parent)

    monkeypatch.setattr(LocalGitStore, "commit", racing_commit)
    result = publish(tiny_run, store_path, ["questions"])[0]
    assert len(calls) == 2 and result.created
    store = open_store(store_path)
    assert store.read("OTHER.md", "main") == b"x"  # the other commit survived
    assert "manifests/questions.json" in store.files("v1-questions")


@pytest.mark.parametrize(
    ("kwargs", "error", "needle"),
    [
        ({"stages": ["nosuch"]}, ConfigError, "nosuch"),
        ({"run_dir": "/no/such/run"}, ConfigError, "not a run directory"),
        ({"tag_prefix": "a/b"}, ConfigError, "'/'"),
    ],
)
def test_bad_publish_input(tiny_run, tmp_path, kwargs, error, needle):
    args = {"run_dir": tiny_run, "target": tmp_path / "store", **kwargs}
    with pytest.raises(error, match=needle):
        publish(**args)
    assert not (tmp_path / "store").exists()


def test_unknown_revision_names_it(tiny_run, tmp_path):
    publish(tiny_run, tmp_path / "store", ["questions"])
    with pytest.raises(StoreError, match=r"'v9'.*v1-questions"):
        scalequest_dataset.load_dataset(tmp_path / "store", "questions", revision="v9")


def test_cli_publish_and_log(tiny_run, tmp_path):
    cli = [sys.executable, "-m", "scalequest_dataset.cli"]
    res = subprocess.run([*cli, "publish", str(tiny_run), "--to", str(tmp_path / "s"), "--stage", "questions"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "questions" in res.stdout and "committed" in res.stdout
    res = subprocess.run([*cli, "publish", str(tiny_run), "--to", str(tmp_path / "s"), "--stage", "questions"],
                         capture_output=True, text=True)
    assert "no commit; tag v1-questions unchanged" in res.stdout
    res = subprocess.run([*cli, "log", str(tmp_path / "s")], capture_output=True, text=True)
    assert "v1-questions" in res.stdout and str(len(run_rows(tiny_run, "questions"))) in res.stdout


def test_log_of_a_store_without_tags_says_so(tmp_path):
    from scalequest_dataset.revisions.stores.git import LocalGitStore

    LocalGitStore(tmp_path / "empty", create=True)
    res = subprocess.run([sys.executable, "-m", "scalequest_dataset.cli", "log", str(tmp_path / "empty")],
                         capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == f"{tmp_path / 'empty'}: no tags yet"


# ---------------------------------------------------------------------------------------------- the card's images


def images_at(store, revision: str) -> dict[str, str]:
    """Every image of a revision with its blob id (what "the image changed" compares)."""
    return {p: d.value for p, d in store.files(revision).items() if p.startswith("images/")}


def test_card_images_are_in_the_revision_and_linked_from_the_card(tiny_run, tmp_path):
    publish(tiny_run, tmp_path / "store")
    store = open_store(tmp_path / "store")
    images = images_at(store, "v1")
    for path in ("images/funnel.png", "images/drop-reasons.png", "images/questions/query-length.png",
                 "images/questions/generator-mix.png", "images/difficulty/difficulty.png",
                 "images/responses/response-length.png", "images/reward/reward.png",
                 "images/default/response-length.png", "images/default/reward.png"):
        assert path in images, sorted(images)
    readme = store.read("README.md", "v1").decode()
    figures = readme.split("## Figures")[1].split("\n## ")[0]
    links = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", figures)
    assert sorted(links) == sorted(images)  # every image linked, relatively, and every link resolves
    for path in images:
        assert store.read(path, "v1").startswith(b"\x89PNG\r\n\x1a\n")
    # The funnel table reads by units: responses made from questions, kept out of what was made.
    funnel = readme.split("## Funnel")[1].split("\n## ")[0]
    row = next(line for line in funnel.splitlines() if line.startswith("| `responses` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].endswith("questions") and cells[2].endswith("responses") and cells[3].endswith("responses")
    assert int(cells[4].rstrip("%")) <= 100


def test_card_images_are_committed_with_their_stage_and_never_redrawn_for_the_same_data(tiny_run, tmp_path):
    store_path = tmp_path / "store"
    first = publish(tiny_run, store_path, ["questions"])[0]
    store = open_store(store_path)
    assert {"images/funnel.png", "images/questions/query-length.png"} <= set(images_at(store, first.commit))
    questions_images = {p: b for p, b in images_at(store, first.commit).items() if p.startswith("images/questions/")}
    publish(tiny_run, store_path)  # every later stage: the questions' images stay as they were
    after = images_at(store, "main")
    assert {p: after[p] for p in questions_images} == questions_images
    head = store.head()
    again = publish(tiny_run, store_path)  # identical data: no commit, no image touched
    assert all(not r.created for r in again) and store.head() == head
    assert images_at(store, "main") == after
    publish(tiny_run, tmp_path / "other")  # drawn again elsewhere from the same data: the same bytes
    assert images_at(open_store(tmp_path / "other"), "main") == after


def test_stage_figures_stream_one_column_at_a_time(tiny_run, monkeypatch):
    """Shards are read in record batches of the column a figure needs, never whole; the counts are complete."""
    from scalequest_dataset.revisions import figures as cardfigures

    lengths = [len(r["response"]) for r in run_rows(tiny_run, "responses")]
    read: list[list[str]] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        read.append(kwargs.get("columns"))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("a whole table was read"))
    files = {split: sorted((tiny_run / "data" / "responses").glob(f"{split}-*.parquet")) for split in ("train", "dropped")}
    figures = cardfigures.stage_figures("responses", files)
    assert list(figures) == ["images/responses/response-length.png"]
    assert read and all(columns == ["response"] for columns in read)
    edges, counts = cardfigures.length_histogram({"kept": files["train"]}, "response")
    assert sum(counts["kept"]) == len(lengths) and edges[-1] == max(lengths)
