"""The stage registry: one module per stage, in pipeline order. The config model (`stages.<name>` sections),
the stage order, and what each stage reads (the stage before it among those a config enables) all derive
from REGISTRY; adding a stage is one module plus one line here. Names are the dataset config names users
pass to `load_dataset`."""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import ShardResult, Stage, StageContext

# The pipeline's order: one module per stage, named as the stage. Readers that only need the order (diff, load,
# the locator) get it without importing the stages (and `datasets`, which their Features need).
STAGE_ORDER: tuple[str, ...] = ("questions", "language", "dedup", "decontamination", "solvability", "difficulty",
                                "responses", "reward", "default")


def stage_order() -> tuple[str, ...]:
    return STAGE_ORDER


@functools.cache
def declared_statistics() -> dict[str, dict[str, str]]:
    """`Stage.statistics` of the base class ("*") and of each stage, read from the modules' source, not imported:
    importing a stage imports `datasets` for its Features (~1 s, holding the interpreter), which a diff of two
    revisions otherwise never needs. A declaration must therefore be a literal dict in the class body
    (tests/stages/test_registry.py checks this reading equals the imported classes')."""

    def literal(name: str, class_name: str | None) -> dict[str, str]:
        spec = importlib.util.find_spec(f"{__name__}.{name}")
        assert spec is not None and spec.origin is not None, f"no module stages/{name}.py"
        tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
        found: dict[str, str] = {}
        for cls in tree.body:
            if not isinstance(cls, ast.ClassDef) or (class_name is not None and cls.name != class_name):
                continue
            for node in cls.body:
                target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else (
                    node.target if isinstance(node, ast.AnnAssign) else None)
                if isinstance(target, ast.Name) and target.id == "statistics" and node.value is not None:
                    found.update(ast.literal_eval(node.value))
        return found

    out = {"*": literal("base", "Stage")}
    out.update({name: literal(name, None) for name in STAGE_ORDER})
    return out


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


__all__ = ["REGISTRY", "STAGES", "STAGE_ORDER", "ShardResult", "Stage", "StageContext", "declared_statistics",
           "stage_order"]
