"""The one parser of "where a version lives" (`locator.locate`) and the registry of store kinds it opens."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scalequest_dataset.recipe.params import ConfigError
from scalequest_dataset.revisions import stores
from scalequest_dataset.revisions.locator import Location, RunSource, locate, open_source
from scalequest_dataset.revisions.stores import StoreError, open_store, store_kind


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A run directory, a local store, and a working directory with neither an `org` folder nor a `run` one."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    store = tmp_path / "store"
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(store)], check=True)
    return {"run": run, "store": store}


def test_every_spelling_of_a_version(places):
    run, store = str(places["run"]), str(places["store"])
    assert locate(run) == Location("run", run)
    assert locate(store) == Location("git", store)
    assert locate(f"{store}@v1-questions") == Location("git", store, "v1-questions")
    assert locate(store, revision="abc123") == Location("git", store, "abc123")
    assert locate("org/name@v1") == Location("hub", "hf://datasets/org/name", "v1")
    assert locate("org/name") == Location("hub", "hf://datasets/org/name")
    assert locate("hf://datasets/org/name@main") == Location("hub", "hf://datasets/org/name", "main")
    assert str(locate(f"{store}@v1")) == f"{store}@v1"


def test_a_path_with_an_at_sign_that_exists_is_a_path(places, tmp_path):
    odd = tmp_path / "me@home"
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(odd)], check=True)
    assert locate(str(odd)) == Location("git", str(odd))
    assert locate(f"{odd}@v2") == Location("git", str(odd), "v2")


@pytest.mark.parametrize("text, message", [
    ("RUN@v1", "a run directory has no revisions"),
    ("STORE@", "nothing after '@'"),
    ("./missing@v1", "does not exist"),
    ("a/b/c@v1", "does not exist"),  # more than ORG/NAME: a path, and not there
    ("/abs/org@v1", "does not exist"),
])
def test_what_cannot_be_a_version_is_one_clear_error(places, text, message):
    text = text.replace("RUN", str(places["run"])).replace("STORE", str(places["store"]))
    with pytest.raises(ConfigError, match=message):
        locate(text)


def test_a_revision_given_twice_must_agree(places):
    with pytest.raises(ConfigError, match="give one"):
        locate(f"{places['store']}@v1", revision="v2")
    assert locate(f"{places['store']}@v1", revision="v1").revision == "v1"


def test_a_folder_named_like_the_org_makes_it_a_path(places, tmp_path):
    (tmp_path / "org").mkdir()
    with pytest.raises(ConfigError, match="does not exist"):
        locate("org/name@v1")


def test_store_kinds_come_from_the_registry():
    assert store_kind("/some/path") == "git" and store_kind("hf://datasets/a/b") == "hub"
    assert set(stores.KINDS.values()) == {"git", "hub"}
    with pytest.raises(StoreError, match="no store serves s3://"):
        store_kind("s3://bucket/store")
    with pytest.raises(StoreError, match="hf://datasets/ORG/NAME"):
        open_store("hf://models/a/b")


def test_open_source_opens_what_locate_names(places):
    assert isinstance(open_source(places["run"]), RunSource)
    with pytest.raises(StoreError):  # an empty store has no main yet
        open_source(f"{places['store']}@main")
    with pytest.raises(StoreError, match="neither a run directory nor a scalequest store"):
        open_source(places["run"].parent)  # exists, neither a run directory nor a store


def test_a_revision_cannot_smuggle_a_git_option(places):
    from scalequest_dataset.revisions.stores.base import RevisionNotFound

    store = open_store(places["store"])
    for bad in ("--output=/tmp/x", "-q", "a b", "x\0y", ""):
        with pytest.raises(RevisionNotFound):
            store.resolve(bad)
