"""The Dockerfile and compose.yaml hold what the README promises. Docker is not installed
here and no image registry is reachable: the build step itself is run by
tests/test_fresh_start.py (the same scripts/install.sh that ./start.sh runs)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.test_fresh_start import dockerfile_install_step

ROOT = Path(__file__).resolve().parent.parent


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _one(instructions, name: str) -> str:
    values = [rest for word, rest in instructions if word == name]
    assert len(values) == 1, f"{name}: {values}"
    return values[0]


def test_dockerfile_slim_base_non_root_volume_healthcheck_and_gunicorn():
    instructions = _instructions()
    assert re.fullmatch(r"python:3\.1[1-9]-slim(-trixie)?", _one(instructions, "FROM"))
    user = _one(instructions, "USER")
    assert user not in ("root", "0")
    # The install runs as that user, after USER (the venv belongs to it).
    words = [word for word, _ in instructions]
    install = next(i for i, (w, r) in enumerate(instructions) if w == "RUN" and "install.sh" in r)
    assert words.index("USER") < install
    # pg_dump and pg_restore for `flask backup` on PostgreSQL, as root before USER.
    client = next(i for i, (w, r) in enumerate(instructions) if "postgresql-client" in r)
    assert client < words.index("USER")
    assert dockerfile_install_step(ROOT / "Dockerfile") == "./scripts/install.sh"
    assert _one(instructions, "WORKDIR") == "/app"
    assert "/app/instance" in _one(instructions, "VOLUME")
    health = _one(instructions, "HEALTHCHECK")
    assert "CMD" in health and "http://127.0.0.1:8080/healthz" in health
    assert "KEYRELAY_BIND=0.0.0.0:8080" in _one(instructions, "ENV")
    # The command is the README's: start.sh, which serves with gunicorn.conf.py.
    assert _one(instructions, "CMD") == '["./start.sh"]'
    start = (ROOT / "start.sh").read_text()
    assert "exec .venv/bin/gunicorn -c gunicorn.conf.py 'app:create_app()'" in start
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "instance/*" in ignored


def test_compose_runs_keyrelay_on_postgresql_and_redis():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"keyrelay", "postgres", "redis"}
    keyrelay = services["keyrelay"]
    assert keyrelay["build"] == "."
    env = keyrelay["environment"]
    assert env["KEYRELAY_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env["KEYRELAY_DATABASE_URL"]
    assert env["KEYRELAY_REDIS_URL"].startswith("redis://redis:6379")
    assert env["KEYRELAY_BIND"] == "0.0.0.0:8080"
    assert any(v.endswith(":/app/instance") for v in keyrelay["volumes"])
    for name in ("postgres", "redis"):
        assert keyrelay["depends_on"][name]["condition"] == "service_healthy"
        assert services[name]["healthcheck"]["test"]
        assert services[name]["volumes"]
    assert set(compose["volumes"]) >= {"keyrelay-instance", "postgres-data", "redis-data"}
