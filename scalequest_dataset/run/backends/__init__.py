"""Backends by name (`scalequest run --backend NAME`): adding one is a module with a `Backend` subclass (its
command-line options declared on it) plus one line here. Slurm needs no backend class: an array task runs
`scalequest run --shard i/N` in-process, and `scalequest finalize RUN` verifies and writes the manifests
(tools/slurm/). Backend modules import nothing heavy until they run, so the CLI reads their options at
start-up."""

from __future__ import annotations

import argparse
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Backend, Reporter, StageJob

BACKENDS: dict[str, str] = {
    "local": "scalequest_dataset.run.backends.local:LocalBackend",
    "ray": "scalequest_dataset.run.backends.ray:RayBackend",
}
DEFAULT = "local"


def backend_class(name: str) -> type[Backend]:
    if name not in BACKENDS:
        from ...recipe.params import ConfigError

        raise ConfigError(f"unknown backend {name!r}: allowed are {', '.join(BACKENDS)}")
    module, _, attr = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--backend`, the worker options every backend takes, and each backend's own (a group per backend)."""
    classes = {name: backend_class(name) for name in BACKENDS}
    parser.add_argument("--backend", choices=sorted(BACKENDS), default=DEFAULT, help="where shards run: "
                        + "; ".join(f"{name}: {cls.summary}" for name, cls in classes.items()))
    parser.add_argument("--workers", type=int, default=1, help="worker processes (local) or actors (ray), each with "
                        "its own device and engines")
    parser.add_argument("--gpus-per-worker", type=int, default=1, help="GPUs per worker (tensor parallelism)")
    for name, cls in classes.items():
        cls.add_arguments(parser.add_argument_group(f"--backend {name}"))


def from_args(args: argparse.Namespace) -> Backend:
    """The backend `--backend` names, made from its options (nothing started); an option of another backend given
    is refused, naming the backend it goes with."""
    for name in BACKENDS:
        if name == args.backend:
            continue
        own = argparse.ArgumentParser(add_help=False)
        backend_class(name).add_arguments(own.add_argument_group())
        for action in own._actions:
            if getattr(args, action.dest, action.default) != action.default:
                from ...recipe.params import ConfigError

                raise ConfigError(f"{action.option_strings[0]} goes with --backend {name}")
    return backend_class(args.backend).from_args(args)


__all__ = ["BACKENDS", "Backend", "Reporter", "StageJob", "add_arguments", "backend_class", "from_args"]


def __getattr__(name: str) -> Any:
    if name in ("Backend", "Reporter", "StageJob"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
