"""KeyRelay's application factory."""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import secrets as pysecrets
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from dotenv import load_dotenv
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

import config
from extensions import db
from gateway import tokens
from gateway.router import RetrySettings
from gateway.secrets import SecretBox, load_or_create_key_file
from gateway.service import Gateway, GatewaySettings
from gateway.store import configure_sqlite

ROOT = Path(__file__).resolve().parent
API_PREFIXES = ("/v1/", "/api/v1/")


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL mode and a lock timeout on every SQLite connection the pool opens."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        configure_sqlite(dbapi_connection)


class _Sessions(SecureCookieSessionInterface):
    """Cookie sessions for the admin area only: the OpenAI-compatible API authenticates
    every call by bearer key, and skipping the session saves work on each proxied call."""

    def open_session(self, app: Flask, request):
        if request.path.startswith(API_PREFIXES):
            return None  # Flask's null session: nothing read, nothing written
        return super().open_session(app, request)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings from KEYRELAY_* (and .env), then test overrides."""
    load_dotenv(ROOT / ".env")
    settings = config.from_environment()
    settings.update(test_config or {})
    instance = Path(settings.get("INSTANCE_PATH") or ROOT / "instance")
    app = Flask(__name__, instance_path=str(instance))
    app.session_interface = _Sessions()
    instance.mkdir(parents=True, exist_ok=True)
    app.config.from_mapping(settings)
    app.config["SQLALCHEMY_DATABASE_URI"] = settings["DATABASE_URL"] or (
        f"sqlite:///{instance / 'keyrelay.db'}"
    )
    app.config["MAX_CONTENT_LENGTH"] = settings["MAX_BODY_BYTES"]
    app.config["MASTER_KEY"] = settings["MASTER_KEY"] or _instance_master_key(instance)
    app.config["MASTER_KEY_SOURCE"] = "env" if settings["MASTER_KEY"] else "instance"
    secret_material = settings["SECRET_KEY"] or load_or_create_key_file(instance / "secret.key")
    app.config["SECRET_KEY"] = secret_material
    logging.basicConfig(level=settings["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(message)s")

    db.init_app(app)
    with app.app_context():
        _initialise_database(instance)
        gateway = Gateway(
            db.engine,
            SecretBox(secret_material),
            _gateway_settings(settings),
            journal_dir=instance / "journal",
            clock=settings.get("CLOCK"),
        )
    # Requests a killed process served but had not written yet (its journal) go in now.
    gateway.books.recover()
    app.extensions["keyrelay"] = gateway
    atexit.register(gateway.close)
    register_blueprints(app)
    register_commands(app)
    tokens.warm_up()
    return app


def _gateway_settings(settings: dict) -> GatewaySettings:
    retry = RetrySettings(
        max_attempts=settings["MAX_ATTEMPTS"],
        deadline=settings["REQUEST_DEADLINE"],
        connect_timeout=settings["CONNECT_TIMEOUT"],
        read_timeout=settings["READ_TIMEOUT"],
        cooldown_seconds=settings["COOLDOWN_SECONDS"],
        failure_threshold=settings["FAILURE_THRESHOLD"],
    )
    return GatewaySettings(retry=retry, strategy=settings["STRATEGY"])


def _instance_master_key(instance: Path) -> str:
    """The generated master key in instance/master_key (0600), created on first start."""
    path = instance / "master_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    key = "kr-master-" + pysecrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


def _initialise_database(instance: Path) -> None:
    """Create tables and the `default` profile once, even with several workers starting."""
    from models import DEFAULT_PROFILE, Profile

    with open(instance / ".init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        db.create_all()
        if db.session.scalar(select(Profile.id).where(Profile.name == DEFAULT_PROFILE)) is None:
            db.session.add(Profile(name=DEFAULT_PROFILE, created_at=datetime.now(UTC)))
            db.session.commit()
        db.session.remove()


def register_blueprints(app: Flask) -> None:
    """The proxy under /v1 and /api/v1, and the admin JSON API."""
    from blueprints import admin_api, errors, proxy, system

    app.register_blueprint(proxy.bp, url_prefix="/v1")
    app.register_blueprint(proxy.bp, url_prefix="/api/v1", name="proxy_api_v1")
    app.register_blueprint(admin_api.bp, url_prefix="/api/admin")
    app.register_blueprint(system.bp)
    errors.register(app)


def register_commands(app: Flask) -> None:
    """`flask keys …` and `flask init-db`."""
    from blueprints.cli import init_db_command, keys_cli

    app.cli.add_command(keys_cli)
    app.cli.add_command(init_db_command)
