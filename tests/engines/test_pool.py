"""Between stages in one worker, the previous engine's memory is released before the next one loads: the pool
closes the engine it drops, and holds no reference to it, before it loads the next. What a CPU cannot show: that
the CUDA allocator then hands that memory to the next engine (torch.cuda.empty_cache runs only where CUDA is)."""

from __future__ import annotations

import gc
import types
import weakref

from scalequest_dataset import engines
from scalequest_dataset.engines import EnginePool

EVENTS: list[str] = []
LIVE: weakref.WeakSet = weakref.WeakSet()


class Weights:
    """Stands for an engine's weights: alive as long as something refers to them."""


class FakeEngine:
    def __init__(self, model_path: str, **_: object) -> None:
        gc.collect()
        EVENTS.append(f"load {model_path} with {sorted(w.name for w in LIVE)} alive")
        self.weights = Weights()
        self.weights.name = model_path
        LIVE.add(self.weights)
        self.batch_size = 1

    def close(self) -> None:
        EVENTS.append(f"close {self.weights.name}")
        del self.weights


def test_the_pool_releases_an_engine_before_loading_the_next(monkeypatch):
    monkeypatch.setattr(engines, "engine_class", lambda name: FakeEngine)
    monkeypatch.setattr(FakeEngine, "Options", types.SimpleNamespace(
        model_validate=lambda o: types.SimpleNamespace(model_dump=lambda: {})), raising=False)
    EVENTS.clear()
    pool = EnginePool()
    for model in ("stage-1-model", "stage-1-model", "stage-2-model"):
        pool.get("fake", model, dtype="auto", batch_size=8)
    pool.close()
    assert EVENTS == ["load stage-1-model with [] alive", "close stage-1-model",
                      "load stage-2-model with [] alive", "close stage-2-model"]
