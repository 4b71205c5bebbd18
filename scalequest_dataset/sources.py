"""Where a version of the dataset lives, for diff and regenerate: a run directory, a local store at a
revision (`PATH@REV`) or a Hub repo at a revision (`ORG/NAME@REV`). Manifests are read eagerly (small);
shards are fetched only when asked for, and cached by commit id."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import STAGE_ORDER, ConfigError
from .storage import read_json


class Source:
    label: str

    def manifests(self) -> dict[str, dict[str, Any]]:
        raise NotImplementedError

    def shard_path(self, stage: str, file: str) -> Path:
        raise NotImplementedError


class RunSource(Source):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = str(root)

    def manifests(self) -> dict[str, dict[str, Any]]:
        return {s: read_json(self.root / "manifests" / f"{s}.json") for s in STAGE_ORDER
                if (self.root / "manifests" / f"{s}.json").exists()}

    def shard_path(self, stage: str, file: str) -> Path:
        return self.root / "data" / stage / file


class StoreSource(Source):
    def __init__(self, store, revision: str) -> None:
        self.store = store
        self.revision = revision
        self.commit = store.resolve(revision)
        self.label = f"{store.location}@{revision}"
        self._manifests: dict[str, dict[str, Any]] | None = None

    def manifests(self) -> dict[str, dict[str, Any]]:
        if self._manifests is None:
            files = self.store.files(self.commit)
            self._manifests = {s: json.loads(self.store.read(f"manifests/{s}.json", self.commit))
                               for s in STAGE_ORDER if f"manifests/{s}.json" in files}
        return self._manifests

    def shard_path(self, stage: str, file: str) -> Path:
        dest = self.store.cache_folder("shards", self.commit) / stage / file
        if not dest.exists():
            self.store.fetch(f"data/{stage}/{file}", self.commit, dest)
        return dest


def open_source(text: str | Path) -> Source:
    """`RUN_DIR`, `STORE_PATH@REV` (REV defaults to main) or `ORG/NAME@REV` on the Hub."""
    from .store import open_store

    raw = str(text)
    location, _, revision = raw.rpartition("@") if "@" in raw else (raw, "", "")
    path = Path(location).expanduser()
    if (path / "config.yaml").is_file() and (path / "manifests").is_dir():
        if revision:
            raise ConfigError(f"{raw}: a run directory has no revisions")
        return RunSource(path)
    if path.exists():
        return StoreSource(open_store(path), revision or "main")
    if location.count("/") == 1 and not location.startswith((".", "/", "~")):
        return StoreSource(open_store(f"hf://datasets/{location}"), revision or "main")
    raise ConfigError(f"{raw!r} is not a run directory, a store path or a Hub repo id (ORG/NAME@REV)")
