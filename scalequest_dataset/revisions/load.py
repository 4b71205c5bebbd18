"""`scalequest_dataset.load_dataset(where, stage, revision=...)`: one call for every place a stage can live (a run
directory, a local store, a Hub repo; see `locator`). `datasets` gets only verified files of the revision: the
card's `configs:` globs for the stage, resolved against the revision's own file list (never against a disk),
must name exactly the files of the stage's manifest, and each of them is fetched and checked (size, sha256, the
content digest recomputed from its rows) by `Source.file` before `datasets` sees its path. A stage with 0 rows
loads as an empty dataset with its features.

On the Hub, plain `datasets.load_dataset(repo, stage, revision=tag)` also works (the card's `configs:`); this
call is the one that checks what it hands over."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from ..recipe.params import ConfigError
from ..run.records import FileRecord
from ..stages import STAGES
from .locator import Source, StoreSource, open_source
from .stores import RepoLayout, VerificationError


def load_dataset(path_or_repo: str | Path, stage: str = "default", revision: str | None = None,
                 split: str = "train", **kwargs: Any):
    return load_stage(open_source(path_or_repo, revision), stage, split, **kwargs)


def load_stage(src: Source, stage: str, split: str = "train", **kwargs: Any):
    import datasets

    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}: allowed are {', '.join(STAGES)}")
    features = STAGES[stage].features if split == "train" else STAGES[stage].dropped_features
    if features is None:
        raise ConfigError(f"stage {stage!r} has no {split!r} split")
    files = verified_files(src, stage, split)
    if not any(f.rows for f in files):  # `datasets` cannot read a split of empty files: an empty dataset
        return datasets.Dataset.from_dict({name: [] for name in features}, features=features, split=split)
    paths = [str(src.file(stage, f).path) for f in files if f.rows]
    return datasets.load_dataset("parquet", data_files={split: paths}, split=split, features=features, **kwargs)


def verified_files(src: Source, stage: str, split: str) -> list[FileRecord]:
    """The records of `stage`'s `split` files, every one fetched and checked (`src.file`); for a store, the card's
    globs for the split must resolve, within the revision's own files, to exactly these."""
    manifests = src.manifests()
    if stage not in manifests:
        raise ConfigError(f"stage {stage!r} is not in {src.label} (stages there: {', '.join(manifests) or 'none'})")
    records = manifests[stage].split_files(split)
    if split not in manifests[stage].splits() and split != "train" and STAGES[stage].dropped_features is None:
        raise ConfigError(f"stage {stage!r} of {src.label} has no {split!r} split")
    if isinstance(src, StoreSource) and any(f.rows for f in records):
        named = card_files(src, stage, split)
        want = {RepoLayout.data(stage, f.file) for f in records if f.rows}
        if not want <= named or not named <= {RepoLayout.data(stage, f.file) for f in records}:
            odd = sorted(named ^ want)[:3]
            raise VerificationError(f"{src.label}: the card's configs for {stage!r} ({split}) name other files than "
                                    f"its manifest (e.g. {', '.join(odd)}); not loaded")
    for f in records:
        src.file(stage, f)
    return records


def card_files(src: StoreSource, stage: str, split: str) -> set[str]:
    """The files of the revision that the card's `configs:` globs for (`stage`, `split`) match (each glob already
    checked to stay inside the stage's folder)."""
    where = f"{src.label} {RepoLayout.CARD}"
    globs = src.card().get(stage, {}).get(split)
    if not globs:
        raise VerificationError(f"{where}: no `configs:` entry names {split!r} files for stage {stage!r}")
    return {f for f in src.files() if any(fnmatch.fnmatchcase(f, g) for g in globs)}
