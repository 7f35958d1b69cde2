#!/usr/bin/env bash
# Start KeyRelay: make the virtualenv, install, set up instance/, serve (default
# 127.0.0.1:8080; KEYRELAY_BIND in the environment or .env, or --host / --port, say where).
set -euo pipefail
cd "$(dirname "$0")"
usage() {
  echo "Usage: ./start.sh [--port N] [--host ADDRESS]"
  echo "  Serves KeyRelay. Without options: KEYRELAY_BIND (environment, then .env), else 127.0.0.1:8080."
}
host="" port=""
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="${2:-}"; shift $(($# > 1 ? 2 : 1)) ;;
    --port=*) port="${1#*=}"; shift ;;
    --host) host="${2:-}"; shift $(($# > 1 ? 2 : 1)) ;;
    --host=*) host="${1#*=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "start.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
if [ -n "$port" ] && ! [[ "$port" =~ ^[0-9]+$ && "$port" -ge 1 && "$port" -le 65535 ]]; then
  echo "start.sh: --port needs a number from 1 to 65535, not '$port'" >&2
  exit 2
fi
if [ ! -x .venv/bin/gunicorn ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "Installing KeyRelay into .venv (first start takes a minute)…"
  scripts/install.sh
fi
if [ -n "$host$port" ]; then
  # The address the settings give (environment, then .env: config.py), with what was asked.
  bind="$(PYTHONPATH=. .venv/bin/python -c 'import config; print(config.from_environment()["BIND"])')"
  export KEYRELAY_BIND="${host:-${bind%:*}}:${port:-${bind##*:}}"
fi
./kr init-db
# This checkout's code first, whatever the venv was installed from (as ./kr does).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec .venv/bin/gunicorn -c gunicorn.conf.py 'app:create_app()'
