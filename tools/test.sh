#!/usr/bin/env bash
# README command 2: set up, then run the whole test suite (offline; builds its own tiny models).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
