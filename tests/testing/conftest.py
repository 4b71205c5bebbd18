"""Fixtures for tests against the local Hub: the server runs in this process, the clients in subprocesses.

huggingface_hub and datasets read HF_ENDPOINT, HF_HOME and offline mode when imported, and other test
modules import them first with the session's offline settings, so client code always runs in a fresh
interpreter started with `HubServer.client_env`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scalequest_dataset.testing.hub_server import HubServer

ROOT = Path(__file__).resolve().parents[2]
ClientRunner = Callable[..., Any]


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
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        out = work / "result.json"
        proc = subprocess.run([sys.executable, str(script), func, json.dumps(args), str(out)], env=env,
                              capture_output=True, text=True, timeout=timeout, cwd=work)
        assert proc.returncode == 0, f"client {func} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        return json.loads(out.read_text())

    return run
