"""run/layout.py: the one place that knows where things are in a run directory."""

from __future__ import annotations

import pytest

from scalequest_dataset.recipe.params import ConfigError
from scalequest_dataset.revisions.stores.base import RepoLayout
from scalequest_dataset.run import RunLayout
from scalequest_dataset.run.layout import shard_name


def test_shards_are_named_as_the_hub_names_them():
    assert shard_name("train", 3, 12) == "train-00003-of-00012.parquet"
    assert shard_name("dropped", 0, 1) == "dropped-00000-of-00001.parquet"
    layout = RunLayout("/r")
    assert str(layout.shard_file("reward", "train", 3, 12)) == "/r/data/reward/train-00003-of-00012.parquet"
    assert str(layout.record("reward", 3)) == "/r/state/reward/shard-00003.json"


def test_data_and_manifests_sit_where_a_store_keeps_them(tmp_path):
    """A run directory publishes without renaming: its data and manifest paths are the store's."""
    layout = RunLayout(tmp_path)
    assert layout.manifest("dedup").relative_to(tmp_path).as_posix() == RepoLayout.manifest("dedup")
    assert (layout.data_dir("dedup") / "train-00000-of-00001.parquet").relative_to(tmp_path).as_posix() \
        == RepoLayout.data("dedup", "train-00000-of-00001.parquet")


def test_a_folder_without_a_config_is_not_a_run_directory_and_require_names_it(tmp_path):
    assert not RunLayout.is_run_dir(tmp_path)
    with pytest.raises(ConfigError, match="not a run directory") as info:
        RunLayout(tmp_path).require()
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    assert RunLayout(tmp_path).require().root == tmp_path


def test_complete_stages_are_those_with_a_manifest_in_the_given_order(tmp_path):
    layout = RunLayout(tmp_path)
    for stage in ("reward", "questions"):
        layout.manifest(stage).parent.mkdir(parents=True, exist_ok=True)
        layout.manifest(stage).write_text("{}")
    layout.state_dir("language").mkdir(parents=True)  # planned, not finalized: not complete
    assert layout.complete_stages(["questions", "language", "reward"]) == ["questions", "reward"]
    assert layout.complete_stages(("reward", "questions")) == ["reward", "questions"]
