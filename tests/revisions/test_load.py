"""revisions/load.py: `load_dataset(where, stage, revision=...)` hands `datasets` only verified files of the
revision, from a run directory or a store; a split without rows loads as an empty dataset with its features;
the `datasets` builder reads the same rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.runs import tiny_run as make_run

import scalequest_dataset
from scalequest_dataset.recipe.params import ConfigError
from scalequest_dataset.revisions.publish import publish
from scalequest_dataset.revisions.stores import VerificationError
from scalequest_dataset.stages import STAGES


def run_rows(run_dir: Path, stage: str, split: str = "train") -> list[dict]:
    rows = []
    for f in sorted((run_dir / "data" / stage).glob(f"{split}-*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    return rows


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, pool) -> Path:
    root = tmp_path_factory.mktemp("run")
    make_run(root, pool, stages=["questions", "language"])
    return root


@pytest.fixture(scope="module")
def store(tiny_run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "store"
    publish(tiny_run, path)
    return path


@pytest.mark.parametrize("where", ["run", "store"])
def test_a_stage_loads_as_its_rows_with_its_features(tiny_run, store, where):
    for stage in ("questions", "language"):
        args = (tiny_run, stage) if where == "run" else (store, stage, f"v1-{stage}")
        ds = scalequest_dataset.load_dataset(*args)
        assert ds.to_list() == run_rows(tiny_run, stage)
        assert ds.features == STAGES[stage].features


def test_a_split_without_rows_is_an_empty_dataset_with_its_features(tiny_run, store):
    """`datasets` cannot read a split of empty files: a stage that dropped nothing loads `dropped` as 0 rows."""
    assert not run_rows(tiny_run, "language", "dropped")  # the case under test
    for src, kwargs in ((tiny_run, {}), (store, {"revision": "v1-language"})):
        ds = scalequest_dataset.load_dataset(src, "language", split="dropped", **kwargs)
        assert ds.num_rows == 0 and ds.features == STAGES["language"].dropped_features


def test_a_stage_not_there_or_unknown_is_named(tiny_run, store):
    with pytest.raises(ConfigError, match=r"stage .dedup. is not in .*stages there: questions, language"):
        scalequest_dataset.load_dataset(tiny_run, "dedup")
    with pytest.raises(ConfigError, match="unknown stage 'nosuch'"):
        scalequest_dataset.load_dataset(store, "nosuch", revision="v1-language")


def test_a_shard_with_a_flipped_byte_is_never_handed_to_datasets(tiny_run, tmp_path):
    import shutil

    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    victim = sorted((run / "data" / "questions").glob("train-*.parquet"))[1]
    blob = bytearray(victim.read_bytes())
    blob[len(blob) // 2] ^= 1
    victim.write_bytes(bytes(blob))
    with pytest.raises(VerificationError) as info:
        scalequest_dataset.load_dataset(run, "questions")
    assert victim.name in str(info.value)


def test_builder_reads_run_dirs_and_store_revisions(tiny_run, store, tmp_path):
    from scalequest_dataset.revisions.builder import ScaleQuest

    for kwargs in ({"data_dir": str(tiny_run)}, {"data_dir": str(store), "revision": "v1-questions"}):
        builder = ScaleQuest(config_name="questions", cache_dir=str(tmp_path / "cache"), **kwargs)
        builder.download_and_prepare()
        ds = builder.as_dataset(split="train")
        assert ds.to_list() == run_rows(tiny_run, "questions")
