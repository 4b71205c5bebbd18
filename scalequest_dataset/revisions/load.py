"""`scalequest_dataset.load_dataset(path_or_repo, stage, revision=...)`: one call for all three places a
stage can live. A Hub repo goes straight to `datasets.load_dataset(repo, stage, revision=...)`; a local
store's revision is materialised once per commit into the cache (whole: `datasets` resolves every config of
the card) and handed to `datasets` the same way, so the card's YAML `configs:` decide what loads, exactly as
on the Hub - the loaded stage's files checked against its manifest at every load; a run directory's shards
load directly."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..recipe.params import ConfigError
from ..run import RunLayout
from ..run import records as rec
from ..run.records import Manifest
from ..stages import STAGES
from .stores import RepoLayout, VerificationError
from .stores.git import LocalGitStore, is_git_store


def load_dataset(path_or_repo: str | Path, stage: str = "default", revision: str | None = None,
                 split: str = "train", **kwargs):
    import datasets

    path = Path(path_or_repo).expanduser()
    if RunLayout.is_run_dir(path):
        if revision is not None:
            raise ConfigError(f"{path} is a run directory, which has no revisions (publish it to a store first)")
        return _load_run_dir(RunLayout(path), stage, split, **kwargs)
    if is_git_store(path):
        return _load_local_store(path, stage, revision, split, **kwargs)
    if path.exists():
        raise FileNotFoundError(f"{path} is neither a run directory nor a scalequest store")
    return datasets.load_dataset(str(path_or_repo), stage, revision=revision, split=split, **kwargs)


def materialize(store_path: Path, revision: str | None, stage: str) -> tuple[Path, str]:
    """Extract a store revision (card, manifests, data) into the cache and check `stage`'s files against its
    manifest; returns (folder, commit). A folder is complete once renamed into place."""
    store = LocalGitStore(store_path)
    commit = store.resolve(revision or store.branch)
    dest = store.cache_folder("stores", commit)
    if not (dest / ".complete").exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{commit[:12]}.", dir=dest.parent))
        try:
            store.download(commit, [RepoLayout.CARD, RepoLayout.MANIFESTS, RepoLayout.DATA], tmp)
            (tmp / ".complete").write_text(commit + "\n", encoding="utf-8")
            try:
                tmp.rename(dest)
            except OSError:  # another process won the race with identical content
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    _check(dest, stage, f"{store.path}@{revision or store.branch}")
    return dest, commit


def _check(folder: Path, stage: str, label: str) -> None:
    """The stage's files in a materialised revision (laid out like a run directory) against its manifest."""
    from ..files import file_problem

    layout = RunLayout(folder)
    if not layout.manifest(stage).is_file():
        return  # not a stage of this revision: the caller says so
    manifest = rec.read(Manifest, layout.manifest(stage))
    for info in manifest.files().values():
        problem = file_problem(layout.data_dir(stage) / info.file, info.sha256)
        if problem:
            raise VerificationError(f"{label}: {RepoLayout.data(stage, info.file)} "
                                    f"{problem.replace('its record', 'its manifest')}")


def _load_local_store(path: Path, stage: str, revision: str | None, split: str, **kwargs):
    import datasets

    folder, _ = materialize(path, revision, stage)
    if not RunLayout(folder).data_dir(stage).is_dir():
        have = sorted(p.name.removesuffix(".json") for p in (folder / RepoLayout.MANIFESTS).glob("*.json"))
        raise ConfigError(f"stage {stage!r} is not in {path} at revision {revision or 'main'!r} (stages there: {have})")
    return datasets.load_dataset(str(folder), stage, split=split, **kwargs)


def _load_run_dir(layout: RunLayout, stage: str, split: str, **kwargs):
    import datasets

    files = sorted(layout.data_dir(stage).glob(f"{split}-*.parquet"))
    if not files:
        have = sorted(p.name for p in layout.data_dir(stage).parent.glob("*"))
        raise FileNotFoundError(f"no {split!r} files for stage {stage!r} in {layout.root}/data (stages there: {have})")
    features = STAGES[stage].features if split == "train" else STAGES[stage].dropped_features
    return datasets.load_dataset("parquet", data_files={split: [str(f) for f in files]}, split=split,
                                 features=features, **kwargs)
