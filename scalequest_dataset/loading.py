"""`scalequest_dataset.load_dataset(path_or_repo, stage, revision=...)`: one call for all three places a
stage can live. A Hub repo goes straight to `datasets.load_dataset(repo, stage, revision=...)`; a local
store's revision is materialised once (cached by commit id) and handed to `datasets` the same way, so the
card's YAML `configs:` decide what loads, exactly as on the Hub; a run directory's shards load directly."""

from __future__ import annotations

from pathlib import Path

from .stages import STAGES
from .store.git import LocalGitStore, is_git_store


def load_dataset(path_or_repo: str | Path, stage: str = "default", revision: str | None = None,
                 split: str = "train", **kwargs):
    import datasets

    path = Path(path_or_repo).expanduser()
    if (path / "config.yaml").is_file() and (path / "data").is_dir():
        if revision is not None:
            raise ValueError(f"{path} is a run directory, which has no revisions (publish it to a store first)")
        return _load_run_dir(path, stage, split, **kwargs)
    if is_git_store(path):
        return _load_local_store(path, stage, revision, split, **kwargs)
    if path.exists():
        raise FileNotFoundError(f"{path} is neither a run directory nor a scalequest store")
    return datasets.load_dataset(str(path_or_repo), stage, revision=revision, split=split, **kwargs)


def materialize(store_path: Path, revision: str | None) -> tuple[Path, str]:
    """Extract a store revision (README, data, manifests) into the cache; returns (folder, commit)."""
    store = LocalGitStore(store_path)
    commit = store.resolve(revision or store.branch)
    dest = store.cache_folder("stores", commit)
    if not (dest / ".complete").exists():
        import shutil
        import tempfile

        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=commit[:12] + ".", dir=dest.parent))
        store.download(commit, ["README.md", "data", "manifests"], tmp)
        (tmp / ".complete").write_text(commit + "\n")
        try:
            tmp.rename(dest)
        except OSError:  # another process won the race with identical content
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, commit


def _load_local_store(path: Path, stage: str, revision: str | None, split: str, **kwargs):
    import datasets

    folder, _ = materialize(path, revision)
    if not (folder / "data" / stage).is_dir():
        have = sorted(p.name for p in (folder / "data").iterdir()) if (folder / "data").is_dir() else []
        raise ValueError(f"stage {stage!r} is not in {path} at revision {revision or 'main'!r} (stages there: {have})")
    return datasets.load_dataset(str(folder), stage, split=split, **kwargs)


def _load_run_dir(root: Path, stage: str, split: str, **kwargs):
    import datasets

    files = sorted((root / "data" / stage).glob(f"{split}-*.parquet"))
    if not files:
        have = sorted(p.name for p in (root / "data").iterdir())
        raise FileNotFoundError(f"no {split!r} files for stage {stage!r} in {root}/data (stages there: {have})")
    features = STAGES[stage].features if split == "train" else STAGES[stage].dropped_features
    return datasets.load_dataset("parquet", data_files={split: [str(f) for f in files]}, split=split,
                                 features=features, **kwargs)
