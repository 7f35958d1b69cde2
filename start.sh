#!/usr/bin/env bash
# Start KeyRelay on 127.0.0.1:8080: make the virtualenv, install, set up instance/, serve.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/gunicorn ] || [ pyproject.toml -nt .venv/.installed ]; then
  echo "Installing KeyRelay into .venv (first start takes a minute)…"
  scripts/install.sh
fi
.venv/bin/flask --app app init-db
exec .venv/bin/gunicorn -c gunicorn.conf.py 'app:create_app()'
