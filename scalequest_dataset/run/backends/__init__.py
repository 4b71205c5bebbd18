"""Backends by name (`scalequest run --backend NAME`): adding one is a module with a `Backend` subclass plus
one line here. Slurm needs no backend class: an array task runs `scalequest run --shard i/N` in-process, and
`scalequest finalize RUN` verifies and writes the manifests (tools/slurm/)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported on first use: the CLI reads BACKENDS before it knows it will run anything
    from .base import Backend, Reporter, StageJob

BACKENDS: dict[str, str] = {
    "local": "scalequest_dataset.run.backends.local:LocalBackend",
    "ray": "scalequest_dataset.run.backends.ray:RayBackend",
}


def backend_class(name: str) -> type[Backend]:
    from ...recipe.params import ConfigError

    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: allowed are {', '.join(BACKENDS)}")
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["BACKENDS", "Backend", "Reporter", "StageJob", "backend_class"]


def __getattr__(name: str) -> Any:
    if name in ("Backend", "Reporter", "StageJob"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
