#!/usr/bin/env bash
# Install KeyRelay and its runtime dependencies into .venv. The one install step: ./start.sh
# runs it on first start, the Dockerfile runs it at build, tests/test_fresh_start.py runs it
# in a clean virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --no-cache-dir --upgrade pip
.venv/bin/pip install --quiet --no-cache-dir -e .
touch .venv/.installed
