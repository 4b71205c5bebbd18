"""Shared fixtures. Everything is offline: models are built locally (tiny Qwen2) and cached for the session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    # One model cache for the session (and its subprocesses); the tiny model is byte-identical per seed.
    os.environ.setdefault("SCALEQUEST_CACHE", str(ROOT / ".scalequest" / "test-cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from scalequest_dataset.config import ModelSpec
    from scalequest_dataset.models import TINY, resolve_model

    return resolve_model(ModelSpec(id=TINY)).path


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_path: str):
    """One vLLM (CPU build) engine on the tiny model for the whole session: it takes ~1 min to start."""
    pytest.importorskip("vllm")
    from scalequest_dataset.engines import load_engine

    engine = load_engine("vllm", tiny_model_path, dtype="float32", batch_size=64)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_reward_path() -> str:
    from scalequest_dataset.config import ModelSpec
    from scalequest_dataset.models import TINY_REWARD, resolve_model

    return resolve_model(ModelSpec(id=TINY_REWARD)).path


@pytest.fixture(scope="session")
def vllm_score_engine(tiny_reward_path: str):
    """One vLLM pooling engine on the tiny reward model for the whole session (its start is the slow part)."""
    pytest.importorskip("vllm")
    from scalequest_dataset.engines import load_engine

    engine = load_engine("vllm", tiny_reward_path, dtype="float32", batch_size=64, task="score")
    yield engine
    engine.close()
