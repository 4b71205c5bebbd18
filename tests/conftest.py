"""Shared fixtures. Everything is offline: models are built locally (tiny Qwen2) and cached for the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.hub_server import HubServer

ROOT = Path(__file__).resolve().parents[1]
ClientRunner = Callable[..., Any]


def pytest_configure(config: pytest.Config) -> None:
    # One model cache for the session (and its subprocesses); the tiny model is byte-identical per seed.
    os.environ.setdefault("SCALEQUEST_CACHE", str(ROOT / ".scalequest" / "test-cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def _builtin_model(model_id: str) -> str:
    from scalequest_dataset.recipe.model_identity import resolve_model
    from scalequest_dataset.recipe.params import ModelSpec

    return resolve_model(ModelSpec(id=model_id)).path


def _session_vllm(path: str, **settings: Any) -> Iterator[Any]:
    """One vLLM (CPU build) engine per model for the whole session: each takes ~1 min to start."""
    pytest.importorskip("vllm")
    from scalequest_dataset.engines import load_engine

    engine = load_engine("vllm", path, dtype="float32", batch_size=64, **settings)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def tiny_model_path() -> str:
    from scalequest_dataset.recipe.models import TINY

    return _builtin_model(TINY)


@pytest.fixture(scope="session")
def tiny_reward_path() -> str:
    from scalequest_dataset.recipe.models import TINY_REWARD

    return _builtin_model(TINY_REWARD)


@pytest.fixture(scope="session")
def vllm_engine(tiny_model_path: str) -> Iterator[Any]:
    yield from _session_vllm(tiny_model_path)


@pytest.fixture(scope="session")
def vllm_score_engine(tiny_reward_path: str) -> Iterator[Any]:
    """The tiny reward model in vLLM's pooling runner."""
    yield from _session_vllm(tiny_reward_path, task="score")


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    """The engines a test module's runs share (loading a model is the slow part of a tiny run)."""
    from scalequest_dataset.engines import EnginePool

    pool = EnginePool()
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Path]]:
    """`tiny_runs(*overrides, stages=None)`: the `tiny` preset run into a directory once per session for these
    arguments, and shared by every module that asks for the same (the reference runs of plan, finalize, the backends,
    object storage, Ray and revisions). Read it; copy it before changing anything in it."""
    from support.runs import tiny_run

    from scalequest_dataset.engines import EnginePool

    pool = EnginePool()
    made: dict[tuple, Path] = {}

    def get(*overrides: str, stages: list[str] | None = None) -> Path:
        key = (overrides, tuple(stages) if stages else None)
        if key not in made:
            made[key] = tiny_run(tmp_path_factory.mktemp("tiny-run"), pool, *overrides, stages=stages).root
        return made[key]

    yield get
    pool.close()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One new local Ray cluster (2 CPUs, no dashboard; never one already running on the machine) for every Ray
    test of the session; its address, for CLI drivers to attach to. Its worker processes import this checkout
    (PYTHONPATH while it starts)."""
    ray = pytest.importorskip("ray")
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), before]))
    try:
        context = ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = before
    yield context.address_info["address"]
    ray.shutdown()


# The local Hub: the server runs in this process, the clients in subprocesses, because huggingface_hub and
# datasets read HF_ENDPOINT, HF_HOME and offline mode when imported (and other tests import them offline).


@pytest.fixture(scope="module")
def hub() -> Iterator[HubServer]:
    with HubServer() as server:
        yield server


@pytest.fixture(scope="module")
def run_client(hub: HubServer, tmp_path_factory: pytest.TempPathFactory) -> ClientRunner:
    """`run_client(script, func, *args, hf_home=None)`: `func(*args)` from `script`, in a subprocess.

    The script's `__main__` block must call `func(*json.loads(argv[2]))` and write the JSON result to argv[3].
    Each call gets its own HF_HOME (so its own download cache) unless `hf_home` is given.
    """

    def run(script: str | Path, func: str, *args: Any, hf_home: Path | None = None, timeout: float = 120) -> Any:
        work = tmp_path_factory.mktemp(f"client-{func}")
        env = hub.client_env(hf_home or work / "hf_home")
        # the package and tests/ (a client script in a subfolder imports `support` as the tests do)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH")]))
        out = work / "result.json"
        proc = subprocess.run([sys.executable, str(script), func, json.dumps(args), str(out)], env=env,
                              capture_output=True, text=True, timeout=timeout, cwd=work)
        assert proc.returncode == 0, f"client {func} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        return json.loads(out.read_text())

    return run


# A real S3 API server (moto's standalone server) for run directories on object storage: started once per session
# when a test asks for it; this process and its children (workers, CLI subprocesses) reach it through the usual
# environment (AWS_ENDPOINT_URL and a key pair), set for the rest of the session.


@pytest.fixture(scope="session")
def s3() -> Iterator[Any]:
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from support.s3_server import S3Server

    with S3Server() as server:
        saved = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        try:
            yield server
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
