"""The one place that knows where things are in a run directory:

    RUN/config.yaml                                 the resolved config (what every worker reads)
    RUN/data/<stage>/train-XXXXX-of-YYYYY.parquet   rows, sorted by id (and dropped-XXXXX-of-YYYYY.parquet)
    RUN/state/<stage>/plan.json                     fingerprint, pinned models, shard plan
    RUN/state/<stage>/prepared.parquet              a stage's whole-input pass (dedup's index), if any
    RUN/state/<stage>/shard-XXXXX.json              completion record: files with digests, counts, execution
    RUN/state/<stage>/reuse.json, prior*.parquet    `run --from`: what the stage takes from the source version
    RUN/manifests/<stage>.json                      written once every shard is complete and verified
    RUN/state/lock, RUN/state/lock-slice-I-of-N     who runs stages in the directory now (lock.py)
    RUN/logs/                                       engine and library logs, one file per worker
    RUN/.cache/                                     engine compile caches (vLLM)
    RUN/.cache/shared/<token>                       a distributed driver's marker: a worker that sees it sees this run

A run directory on shared storage is all a worker on another node needs. It is a local path or a URL on any
fsspec filesystem (`s3://bucket/run`, see urlpath.py): for a URL, what is each machine's own - its logs and
engine caches - lives in that machine's local folder for the run (`local`), not in the run directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..revisions.stores.base import RepoLayout
from .urlpath import UrlPath, as_path

SPLITS: tuple[str, ...] = ("train", "dropped")


def shard_name(split: str, index: int, total: int) -> str:
    """The Hub's own shard naming, so run directories publish without renaming."""
    return f"{split}-{index:05d}-of-{total:05d}.parquet"


def local_folder(url: UrlPath) -> Path:
    """This machine's own folder for a run directory on a URL (its logs, engine caches, verified copies): under
    the cache, named by a digest of the URL - never a local folder named after the URL."""
    import hashlib

    from ..recipe.models import cache_dir

    return cache_dir() / "remote-runs" / hashlib.sha256(str(url).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunLayout:
    root: Path | UrlPath

    def __init__(self, root: str | Path | UrlPath) -> None:
        object.__setattr__(self, "root", as_path(root))

    @staticmethod
    def is_run_dir(path: str | Path | UrlPath) -> bool:
        return (as_path(path) / "config.yaml").is_file()

    @property
    def remote(self) -> bool:
        """On an object store (a URL), not a local path."""
        return isinstance(self.root, UrlPath)

    @property
    def local(self) -> Path:
        """This machine's own folder for the run: the run directory itself, or for a URL a folder under the
        cache named by the URL's digest."""
        return local_folder(self.root) if isinstance(self.root, UrlPath) else self.root

    def require(self) -> RunLayout:
        """This layout, or a clear error when the folder is not a run directory."""
        from ..recipe.params import ConfigError

        if not self.is_run_dir(self.root):
            raise ConfigError(f"{self.root} is not a run directory (no config.yaml): "
                              "`scalequest run --out DIR` makes one")
        return self

    @property
    def config(self) -> Path | UrlPath:
        return self.root / "config.yaml"

    def data_dir(self, stage: str) -> Path | UrlPath:
        return self.root / RepoLayout.DATA / stage

    def shard_file(self, stage: str, split: str, index: int, total: int) -> Path | UrlPath:
        return self.data_dir(stage) / shard_name(split, index, total)

    def state_dir(self, stage: str) -> Path | UrlPath:
        return self.root / "state" / stage

    def plan(self, stage: str) -> Path | UrlPath:
        return self.state_dir(stage) / "plan.json"

    def prepared(self, stage: str) -> Path | UrlPath:
        return self.state_dir(stage) / "prepared.parquet"

    def reuse(self, stage: str) -> Path | UrlPath:
        """`run --from`: what the stage takes from the source version (written once the stage is staged)."""
        return self.state_dir(stage) / "reuse.json"

    def prior(self, stage: str) -> Path | UrlPath:
        """`run --from`: the source's outputs of the rows whose input is unchanged (read by the workers)."""
        return self.state_dir(stage) / "prior.parquet"

    def prior_keys(self, stage: str) -> Path | UrlPath:
        """`run --from`: the input rows (or groups) whose outputs `prior.parquet` holds."""
        return self.state_dir(stage) / "prior-keys.parquet"

    def record(self, stage: str, index: int) -> Path | UrlPath:
        return self.state_dir(stage) / f"shard-{index:05d}.json"

    def manifest(self, stage: str) -> Path | UrlPath:
        return self.root / RepoLayout.manifest(stage)

    @property
    def logs(self) -> Path:
        return self.local / "logs"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    @property
    def cache(self) -> Path:
        return self.local / ".cache"

    def shared_marker(self, token: str) -> Path | UrlPath:
        """A file a driver writes for its workers on other nodes: seeing it proves a worker reads this run
        directory, not a folder of the same name on its own disk."""
        return self.root / ".cache" / "shared" / token

    def complete_stages(self, order: tuple[str, ...] | list[str]) -> list[str]:
        """Stages (in `order`) whose manifest exists: finalize writes it only once every shard is verified."""
        return [s for s in order if self.manifest(s).is_file()]
