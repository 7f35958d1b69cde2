#!/usr/bin/env bash
# Run the whole test suite: ruff (format + lint), then pytest. Extra arguments go to pytest.
# pytest runs in parallel (pytest-xdist): KEYRELAY_TEST_WORKERS workers, by default twice the
# CPUs, at least 4 and at most 8 (most tests wait on servers and subprocesses, so more
# workers than CPUs pay). `./test.sh -n 0` runs serially.
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
cpus=$(nproc 2>/dev/null || echo 2)
workers=${KEYRELAY_TEST_WORKERS:-$((cpus * 2 < 4 ? 4 : (cpus * 2 > 8 ? 8 : cpus * 2)))}
# loadgroup: a module marked xdist_group keeps its tests on one worker (its costly
# module-scoped fixture is built once).
.venv/bin/python -m pytest -n "$workers" --dist loadgroup "$@"
