"""Engines behind one interface, by name. Adding an engine is one file (a class with `name`, `Options` and
the `Engine` methods) plus one line in ENGINES; `--engine` choices, the config's `engine.<name>` section and
its validation all come from this mapping. Engine modules import their heavy libraries lazily, so reading an
engine's `Options` costs nothing.

`EnginePool` keeps loaded engines (a model takes seconds to minutes to load) for a worker's whole life."""

from __future__ import annotations

import importlib
import threading
from typing import Any, Literal

from .base import Completion, Engine, EngineInfo, ProgressFn, Request, Sampling

__all__ = ["ENGINES", "Completion", "Engine", "EngineInfo", "EnginePool", "ProgressFn", "Request", "Sampling",
           "Task", "engine_class", "load_engine", "loads_models"]

ENGINES: dict[str, str] = {
    "vllm": "scalequest_dataset.engines.vllm:VLLMEngine",
    "transformers": "scalequest_dataset.engines.transformers:TransformersEngine",
    "simulate": "scalequest_dataset.engines.simulate:SimulateEngine",
}

# Loading is serialised: transformers builds models under process-wide patches (meta-device init), so two
# threads loading at once corrupt each other's weights.
_LOADING = threading.Lock()

# "generate": a causal LM behind `generate`; "score": a sequence-classification / reward model behind `score`.
Task = Literal["generate", "score"]
TASKS: tuple[str, ...] = ("generate", "score")


def engine_class(name: str) -> type:
    from ..recipe.params import ConfigError  # here, not at the top: the CLI reads ENGINES at start-up

    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}: allowed are {', '.join(ENGINES)}")
    module, _, attr = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def loads_models(name: str) -> bool:
    """False for an engine that loads no model (`simulate`): its models are their ids and revisions as written,
    never resolved on the Hub, built or hashed."""
    return getattr(engine_class(name), "LOADS_MODELS", True)


def load_engine(name: str, model_path: str, *, dtype: str = "auto", batch_size: int = 64,
                revision: str | None = None, task: Task = "generate", trust_remote_code: bool = False,
                options: dict[str, Any] | None = None) -> Engine:
    """Load `model_path` in engine `name`. `options` are the engine's own (`engine.<name>` in a config),
    validated by its `Options` model."""
    if task not in TASKS:
        raise ValueError(f"unknown engine task {task!r}: allowed are {', '.join(TASKS)}")
    cls = engine_class(name)
    opts = cls.Options.model_validate(options or {})
    return cls(model_path, dtype=dtype, batch_size=batch_size, revision=revision, task=task,
               trust_remote_code=trust_remote_code, **opts.model_dump())


class EnginePool:
    """Loaded engines, shared by every shard a worker runs (and by a whole test session). Only one engine is
    kept loaded at a time unless `keep` is raised: on a GPU two 7B models may not fit together."""

    def __init__(self, keep: int = 1) -> None:
        self._engines: dict[tuple, Engine] = {}
        self._keep = keep

    def get(self, name: str, model_path: str, *, dtype: str, batch_size: int, revision: str | None = None,
            task: Task = "generate", trust_remote_code: bool = False, options: dict[str, Any] | None = None
            ) -> Engine:
        key = (name, model_path, dtype, revision, task, trust_remote_code, repr(sorted((options or {}).items())))
        engine = self._engines.get(key)
        if engine is not None:
            try:
                engine.batch_size = batch_size  # a throughput knob, recorded with every shard (EngineConfig.batch_size)
            except ValueError:  # fixed when it was loaded (vLLM's max_num_seqs): load it again with this one
                self._engines.pop(key).close()
                engine = None
        if engine is None:
            while len(self._engines) >= self._keep:
                self._engines.pop(next(iter(self._engines))).close()
            with _LOADING:
                engine = load_engine(name, model_path, dtype=dtype, batch_size=batch_size, revision=revision,
                                     task=task, trust_remote_code=trust_remote_code, options=options)
            self._engines[key] = engine
        return engine

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
