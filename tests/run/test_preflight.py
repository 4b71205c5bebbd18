"""`scalequest preflight` for the paper preset, against the local Hub server holding the preset's model ids
(weight files listed at their real sizes, never served), a stand-in `nvidia-smi` for the GPU inventory and a
stand-in vLLM distribution for the installed build and version. Exit 0 when the run fits; else exit 2 naming
the first thing to fix."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.runs import CLI

ROOT = Path(__file__).resolve().parents[2]
GB = 10**9
CONFIG = b'{"architectures": ["LlamaForCausalLM"]}'


def shards(total: int, n: int) -> dict[str, int]:
    return {f"model-{i + 1:05d}-of-{n:05d}.safetensors": total // n for i in range(n)}


# The paper preset's models, with their weight files' sizes (bf16 7B checkpoints; InternLM2 ships its code).
MODELS = {
    "dyyyyyyyy/ScaleQuest-DeepSeekMath-7B-QGen": shards(13_820_000_000, 3),
    "dyyyyyyyy/ScaleQuest-Qwen2-Math-7B-QGen": shards(15_230_000_000, 4),
    "Qwen/Qwen2-Math-7B-Instruct": shards(15_230_000_000, 4),
    "deepseek-ai/deepseek-math-7b-rl": {"pytorch_model-00001-of-00002.bin": 9_970_000_000,
                                        "pytorch_model-00002-of-00002.bin": 3_850_000_000},
    "internlm/internlm2-7b-reward": {**shards(15_500_000_000, 8), "modeling_internlm2.py": b"# remote code",
                                     "configuration_internlm2.py": b"# remote code",
                                     "tokenization_internlm2.py": b"# remote code"},
    "meta-llama/Llama-3.1-8B-Instruct": shards(16_060_000_000, 4),  # gated
}


@pytest.fixture(scope="module")
def seeded(hub):
    for repo, files in MODELS.items():
        hub.seed_model(repo, {"config.json": CONFIG, **files}, gated="manual" if "llama" in repo else False)
    return hub


# The disk the Hub cache is on, as the preflight process sees it: free bytes from FAKE_FREE_BYTES.
SITECUSTOMIZE = """import os, shutil
_usage = shutil.disk_usage
def disk_usage(path):
    real = _usage(path)
    return type(real)(real.total, real.total - int(os.environ["FAKE_FREE_BYTES"]), int(os.environ["FAKE_FREE_BYTES"]))
shutil.disk_usage = disk_usage
"""


def fake_bin(tmp: Path, gpus: int, memory_mib: int, name: str, capability: str, vllm: str) -> Path:
    """nvidia-smi answering the inventory query, a `vllm` distribution (the GPU build) of version `vllm`, and the
    free disk space (see SITECUSTOMIZE)."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    lines = "".join(f"{i}, {name}, {memory_mib}, {capability}\\n" for i in range(gpus))
    smi.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    site = tmp / "site"
    dist = site / f"vllm-{vllm}.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {vllm}\n")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return tmp


def preflight(hub, tmp: Path, *args: str, gpus: int = 8, memory_mib: int = 81920, name: str = "NVIDIA A100-SXM4-80GB",
              capability: str = "8.0", vllm: str = "0.32.1", token: str | None = None, free: int = 500 * GB
              ) -> subprocess.CompletedProcess:
    fake = fake_bin(tmp, gpus, memory_mib, name, capability, vllm)
    env = hub.client_env(tmp / "hf_home")
    env.pop("HF_TOKEN", None)
    env["HF_HUB_DISABLE_IMPLICIT_TOKEN"] = "1"
    if token:
        env["HF_TOKEN"] = token
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env["PATH"] = os.pathsep.join([str(fake / "bin"), str(Path(sys.executable).parent), env["PATH"]])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(fake / "site")])
    env["SCALEQUEST_CACHE"] = str(tmp / "cache")
    env["FAKE_FREE_BYTES"] = str(free)
    return subprocess.run([*CLI, "preflight", "--preset", "scalequest-math", *args], env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_paper_preset_fits_eight_a100s_and_names_what_it_checked(seeded, tmp_path):
    res = preflight(seeded, tmp_path, "--workers", "8")
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "vllm 0.32.1 (GPU build)" in out and "8 visible: NVIDIA A100-SXM4-80GB" in out
    assert "8 worker(s) x 1 = 8 of 8" in out
    for repo in list(MODELS)[:5]:
        assert f"{repo}@main" in out
    assert "14.2 GB of weights" in out  # InternLM2's safetensors, from the Hub's listing (not its .py files)
    assert "runs its own code (trust_remote_code)" in out
    assert "12.9 GB of weights" in out  # DeepSeekMath-RL: its .bin files (it has no safetensors)
    assert "ready: 8 worker(s) x 1 GPU(s), 5 model(s)" in out


@pytest.mark.parametrize(("args", "kwargs", "first"), [
    (["--workers", "8", "--gpus-per-worker", "2"], {},
     "--gpus-per-worker 2 but engine.vllm.tensor_parallel_size is 1"),
    (["--workers", "8", "--gpus-per-worker", "2", "--set", "engine.vllm.tensor_parallel_size=2"], {},
     "16 GPUs needed, 8 visible: lower --workers to 4"),
    (["--workers", "8"], {"memory_mib": 16384, "name": "Tesla V100-SXM2-16GB", "capability": "7.0"},
     "dyyyyyyyy/ScaleQuest-DeepSeekMath-7B-QGen@main: dyyyyyyyy/ScaleQuest-DeepSeekMath-7B-QGen's weights take "
     "12.9 GB per GPU"),
    (["--workers", "8", "--set", "stages.reward.trust_remote_code=false"], {},
     "internlm/internlm2-7b-reward ships its own model code: set trust_remote_code: true in stages.reward"),
    (["--workers", "8", "--set", "stages.solvability.model.id=meta-llama/Llama-3.1-8B-Instruct"], {},
     "meta-llama/Llama-3.1-8B-Instruct is gated: set HF_TOKEN"),
    (["--workers", "8"], {"vllm": "0.31.0"}, "vLLM 0.31.0 is outside the range the vLLM engine supports"),
    (["--workers", "8"], {"free": 60 * GB}, "disk: the models need 68.5 GB, 55.9 GB is free in"),
])
def test_the_first_thing_to_fix_exits_2_in_one_line(seeded, tmp_path, args, kwargs, first):
    res = preflight(seeded, tmp_path, *args, **kwargs)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "first to fix: " in res.stdout and first in res.stdout.split("first to fix: ", 1)[1], res.stdout
    assert len(res.stderr.strip().splitlines()) == 1 and first in res.stderr, res.stderr


def test_a_token_opens_the_gated_model(seeded, tmp_path):
    res = preflight(seeded, tmp_path, "--workers", "8", "--set",
                    "stages.solvability.model.id=meta-llama/Llama-3.1-8B-Instruct", token="hf_preflightToken0123")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "hf_preflightToken0123" not in res.stdout + res.stderr
