#!/usr/bin/env bash
# README command 1: set up, then run the `demo` preset through every stage on this CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/scalequest demo "$@"
