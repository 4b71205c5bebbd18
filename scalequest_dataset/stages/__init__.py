"""The stage registry: one module per stage, in pipeline order. The config model (`stages.<name>` sections),
the stage order, and what each stage reads (the stage before it among those a config enables) all derive
from REGISTRY; adding a stage is one module plus one line here. Names are the dataset config names users
pass to `load_dataset`."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import ShardResult, Stage, StageContext

# The pipeline's order: one module per stage, named as the stage. Readers that only need the order (diff, load,
# the locator) get it without importing the stages (and `datasets`, which their Features need).
STAGE_ORDER: tuple[str, ...] = ("questions", "language", "dedup", "decontamination", "solvability", "difficulty",
                                "responses", "reward", "default")


def stage_order() -> tuple[str, ...]:
    return STAGE_ORDER


def _registry() -> tuple[type[Stage], ...]:
    from .base import Stage

    def one(name: str) -> type[Stage]:
        module = importlib.import_module(f".{name}", __name__)
        (cls,) = [c for c in vars(module).values()
                  if isinstance(c, type) and issubclass(c, Stage) and c.__module__ == module.__name__]
        assert cls.name == name, f"stages/{name}.py holds stage {cls.name!r}"
        return cls

    return tuple(one(name) for name in STAGE_ORDER)


def __getattr__(name: str) -> Any:
    """REGISTRY (the stage classes in order), STAGES (name -> class) and the base types, on first use."""
    if name in ("REGISTRY", "STAGES"):
        registry = _registry()
        globals().update(REGISTRY=registry, STAGES={cls.name: cls for cls in registry})
        return globals()[name]
    if name in ("ShardResult", "Stage", "StageContext"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["REGISTRY", "STAGES", "STAGE_ORDER", "ShardResult", "Stage", "StageContext", "stage_order"]
