"""Engines behind one interface; `EnginePool` keeps one loaded engine per (backend, model, dtype, task)."""

from __future__ import annotations

from typing import Literal

from .base import Completion, Engine, EngineInfo, ProgressFn, Request, Sampling

__all__ = ["Completion", "Engine", "EngineInfo", "EnginePool", "ProgressFn", "Request", "Sampling", "Task",
           "load_engine"]

# "generate": a causal LM behind `generate`; "score": a sequence-classification / reward model behind `score`.
Task = Literal["generate", "score"]
TASKS: tuple[str, ...] = ("generate", "score")


def load_engine(name: str, model_path: str, *, dtype: str = "auto", batch_size: int = 64,
                revision: str | None = None, task: Task = "generate", trust_remote_code: bool = False,
                **options) -> Engine:
    if task not in TASKS:
        raise ValueError(f"unknown engine task {task!r}: allowed are {', '.join(TASKS)}")
    if name == "vllm":
        from .vllm import VLLMEngine

        return VLLMEngine(model_path, dtype=dtype, batch_size=batch_size, revision=revision, task=task,
                          trust_remote_code=trust_remote_code, **options)
    if name == "transformers":
        from .transformers import TransformersEngine

        return TransformersEngine(model_path, dtype=dtype, batch_size=batch_size, revision=revision, task=task,
                                  trust_remote_code=trust_remote_code)
    raise ValueError(f"unknown engine {name!r}: allowed are 'vllm', 'transformers'")


class EnginePool:
    """Loaded engines, shared by every stage of a run (and by a whole test session). Only one engine is
    kept loaded at a time unless `keep` is raised: on a GPU two 7B models may not fit together."""

    def __init__(self, keep: int = 1, **options) -> None:
        self._engines: dict[tuple, Engine] = {}
        self._keep = keep
        self._options = options

    def get(self, name: str, model_path: str, *, dtype: str, batch_size: int, revision: str | None = None,
            task: Task = "generate", trust_remote_code: bool = False, **options) -> Engine:
        key = (name, model_path, dtype, revision, task, trust_remote_code)
        engine = self._engines.get(key)
        if engine is None:
            while len(self._engines) >= self._keep:
                self._engines.pop(next(iter(self._engines))).close()
            engine = load_engine(name, model_path, dtype=dtype, batch_size=batch_size, revision=revision,
                                 task=task, trust_remote_code=trust_remote_code, **{**self._options, **options})
            self._engines[key] = engine
        engine.batch_size = batch_size  # a throughput knob: changing it never moves bytes
        return engine

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
