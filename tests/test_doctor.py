"""`scalequest doctor` on this machine: engines and their versions, threads, the vLLM build, batch invariance as
vLLM's code decides it, caches, the Hub (never hanging, offline says so) and a token (never printed); exit 0 when
the essentials work, 2 when one does not."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
from support.runs import CLI, cli_env

from scalequest_dataset import doctor

SECRET = "hf_doctorSecretValue0123456789"


def run_doctor(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "doctor"], capture_output=True, text=True, timeout=300,
                          env=cli_env(**{"SCALEQUEST_CACHE": str(tmp_path / "cache"), **env}))


def test_doctor_on_this_machine(tmp_path):
    """The Hub is asked (HF_HUB_OFFLINE=0) at a port nobody listens on: unreachable, said quickly. A token is set:
    doctor says so and prints it nowhere, not even in its log."""
    started = time.monotonic()
    res = run_doctor(tmp_path, HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9", HF_TOKEN=SECRET)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    for needle in ("torch", "threads of", "transformers", "vllm", "batch-invariant", "GPU", "SCALEQUEST_CACHE",
                   "HF hub cache", "HF datasets cache", "essentials: ok"):
        assert needle in out, out
    assert "http://127.0.0.1:9: unreachable" in out
    assert "token" in out and "configured (from HF_TOKEN; not shown)" in out
    log = tmp_path / "cache" / "logs" / "doctor.log"
    assert log.is_file()
    assert SECRET not in out + res.stderr + log.read_text()
    assert time.monotonic() - started < 120  # the Hub's short timeout; the rest is importing vLLM


def test_doctor_fails_on_an_unwritable_cache_and_says_offline(tmp_path):
    (tmp_path / "cache").write_text("a file, not a folder")
    res = run_doctor(tmp_path, HF_HUB_OFFLINE="1")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "offline (HF_HUB_OFFLINE=1), not contacted" in res.stdout
    assert "problem: SCALEQUEST_CACHE: cannot write there" in res.stdout
    assert "set SCALEQUEST_CACHE to a writable folder" in res.stdout


# vLLM's own platform object decides batch invariance: a stand-in for each kind of machine.


class Capability(tuple):
    major = property(lambda self: self[0])
    minor = property(lambda self: self[1])


def fake_platform(kind: str, capability: tuple[int, int] | None = None):
    return types.SimpleNamespace(
        device_type=kind, is_xpu=lambda: kind == "xpu", is_rocm=lambda: kind == "rocm",
        is_cuda_alike=lambda: kind in ("cuda", "rocm"),
        get_device_capability=lambda: Capability(capability) if capability else None)


@pytest.mark.parametrize(("kind", "capability", "expected", "problem"), [
    ("cpu", None, "not available", False),
    ("cuda", (9, 0), "supported (SM90, hopper: cuBLAS without split-k", False),
    ("cuda", (10, 0), "supported (SM100, blackwell", False),
    ("cuda", (8, 0), "supported (SM80: Triton matmul overrides", False),
    ("cuda", (7, 5), "not available: compute capability (7, 5) is below (8, 0)", True),
    ("rocm", None, "supported (ROCm", False),  # an MI300 (gfx942)
    ("xpu", None, "not available: an Intel XPU", False),
])
def test_batch_invariance_as_the_engine_decides_it(monkeypatch, kind, capability, expected, problem):
    """doctor says what the vLLM engine will do: it asks the engine's own decision."""
    # vLLM's tuned-matmul table names the GPU family; imported before its platform module is stood in for.
    pytest.importorskip("vllm.model_executor.determinism.batch_invariant_configs")
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = fake_platform(kind, capability)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setattr("scalequest_dataset.engines.device.rocm_arch", lambda index=0: "gfx942")
    value, fix = doctor.batch_invariance()
    assert value.startswith(expected), value
    assert (fix is not None) == problem


def test_a_hub_that_never_answers_does_not_hang_doctor():
    import socket

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        check = doctor._reach(f"http://127.0.0.1:{silent.getsockname()[1]}")
    assert "unreachable" in check.value and check.problem
    assert time.monotonic() - started < doctor.HUB_TIMEOUT + 2


@pytest.mark.parametrize(("version", "inside"), [
    ("0.32.0", True), ("0.32.3", True), ("0.32.0+cpu", True),
    ("0.8.5", False), ("0.31.9", False), ("0.33.0", False), ("1.0.0", False), ("not-a-version", False),
])
def test_doctor_says_when_the_installed_vllm_is_outside_the_supported_range(monkeypatch, version, inside):
    """A faked vLLM of each version: doctor names the range and what to install when it is outside."""
    from scalequest_dataset.engines.vllm import SUPPORTED_VLLM

    real = doctor._import
    monkeypatch.setattr(doctor, "_import", lambda name: types.SimpleNamespace(__version__=version)
                        if name == "vllm" else real(name))
    monkeypatch.setattr(doctor, "_vllm_build", lambda: "vllm: GPU build, runs on cuda")
    check = next(c for c in doctor._engines() if c.name == "vllm")
    assert check.value.startswith(version)
    if inside:
        assert check.problem is None
    else:
        assert check.problem and f"outside the range the vLLM engine supports ({SUPPORTED_VLLM})" in check.problem


def test_the_vllm_extra_pins_the_range_the_engine_supports():
    import tomllib

    from scalequest_dataset.engines.vllm import SUPPORTED_VLLM

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert project["optional-dependencies"]["vllm"] == [f"vllm{SUPPORTED_VLLM}"]
