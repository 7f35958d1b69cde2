#!/usr/bin/env bash
# Run the whole test suite: ruff (format + lint), then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/pytest ] || [ pyproject.toml -nt .venv/.installed-test ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[test]'
  touch .venv/.installed-test
fi
.venv/bin/ruff format --check .
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
