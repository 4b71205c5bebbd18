"""scalequest-dataset: regenerate, version and audit the ScaleQuest synthetic math corpus."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_dataset", "publish"]


def load_dataset(path_or_repo: Any, stage: str = "default", revision: str | None = None, split: str = "train",
                 **kwargs: Any):
    """Load one stage at one revision from a Hub repo, a local store or a run directory."""
    from .loading import load_dataset as _load

    return _load(path_or_repo, stage, revision=revision, split=split, **kwargs)


def publish(run_dir: Any, target: Any, stages: list[str] | None = None, tag_prefix: str = "v1", force: bool = False):
    """Publish a run directory's complete stages to a local store path or hf://datasets/ORG/NAME."""
    from .publish import publish as _publish

    return _publish(run_dir, target, stages, tag_prefix, force)
