"""KeyRelay's application factory."""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import secrets as pysecrets
import sqlite3
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import Flask, request
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy import event, func, select
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

import config
from extensions import csrf, db, login_manager
from gateway import members, periods, schema, tokens
from gateway.admin.errors import InputError
from gateway.jobs import backup, scheduler
from gateway.keys.provider_keys import check_stored_secrets
from gateway.keys.secrets import SecretBox, load_or_create, load_or_create_key_file
from gateway.ledger.accounting import new_request_id
from gateway.ledger.alerts import BudgetAlerts
from gateway.ledger.journal import DatabaseIdentity
from gateway.proxy.attempts import RetrySettings
from gateway.proxy.relay import COST_HEADER
from gateway.service import Gateway, GatewaySettings
from gateway.store import configure_postgresql, configure_sqlite, set_busy_timeout

ROOT = Path(__file__).resolve().parent
API_PREFIXES = ("/v1/", "/api/v1/")


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """WAL mode and a lock timeout on every SQLite connection the pool opens (a lock
    timeout on PostgreSQL's)."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        configure_sqlite(dbapi_connection)
    elif type(dbapi_connection).__module__.startswith("psycopg"):
        configure_postgresql(dbapi_connection)


class _App(Flask):
    """Flask, remembering which hooks and views are plain functions: it asks
    `inspect.iscoroutinefunction` of each one it calls on every request (≈ 1 µs a hook,
    six of them on a /v1 call); whether a function is a coroutine function never changes."""

    _PLAIN_MAX = 4096  # per-request closures (after_this_request) are not kept forever

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._plain: dict = {}  # function (a method's own) -> whether it is not async

    def ensure_sync(self, func):
        """Flask's ensure_sync, asking each function once."""
        # A bound method is asked by its function: a view class's per-request instance
        # does not fill the table.
        key = getattr(func, "__func__", func)
        try:
            plain = self._plain[key]
        except KeyError:
            plain = super().ensure_sync(func) is func
            if len(self._plain) < self._PLAIN_MAX:
                self._plain[key] = plain
        except TypeError:  # an unhashable callable
            return super().ensure_sync(func)
        return func if plain else super().ensure_sync(func)


class _Sessions(SecureCookieSessionInterface):
    """Cookie sessions for the admin area only: the OpenAI-compatible API authenticates
    every call by bearer key, and skipping the session saves work on each proxied call."""

    def open_session(self, app: Flask, request):
        if request.path.startswith(API_PREFIXES):
            return None  # Flask's null session: nothing read, nothing written
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure cookies whenever the dashboard is reached over HTTPS (or when forced)."""
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


# The dashboard's pages: no inline scripts or styles, no framing, no sniffing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _answer_headers(response):
    """The headers an answer carries by its path, in one hook (Flask pays a call per hook
    on every request): the proxy's trace and cost headers, or the pages' security headers."""
    if request.path.startswith(API_PREFIXES):
        _trace_headers(response)
        # What it cost; one that booked nothing (refused before its body was read, a model
        # list, an unknown path) cost nothing.
        if COST_HEADER not in response.headers:
            response.headers[COST_HEADER] = "0.000000"
    else:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def _trace_headers(response) -> None:
    """Every answer on the proxy paths carries the trace headers the README promises,
    also those given before a request reached the gateway (401, unknown path): a
    request id (for the server log), no attempts, no provider."""
    headers = response.headers
    if "x-keyrelay-request-id" not in headers:
        request_id = new_request_id()
        headers["x-keyrelay-request-id"] = request_id
        headers["x-keyrelay-attempts"] = "0"
        headers["x-keyrelay-provider"] = "none"
        if response.status_code == 401:
            logging.getLogger("keyrelay.auth").info(
                "401 on %s %s from %s (%s)",
                request.method,
                request.path,
                request.remote_addr,
                request_id,
            )


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: settings from KEYRELAY_* (and .env), then test overrides."""
    settings = config.from_environment()
    settings.update(test_config or {})
    periods.configure(settings["TIMEZONE"])
    members.check_settings(settings)
    set_busy_timeout(settings["DB_BUSY_TIMEOUT"])
    instance = Path(settings.get("INSTANCE_PATH") or ROOT / "instance")
    app = _App(__name__, instance_path=str(instance))
    app.session_interface = _Sessions()
    instance.mkdir(parents=True, exist_ok=True)
    app.config.from_mapping(settings)
    app.config["INSTANCE_PATH"] = str(instance)  # resolved: the backup job reads it
    app.config["SQLALCHEMY_DATABASE_URI"] = settings["DATABASE_URL"] or (
        f"sqlite:///{instance / 'keyrelay.db'}"
    )
    app.config["MAX_CONTENT_LENGTH"] = settings["MAX_BODY_BYTES"]
    # Whether this run makes the master key: the start banner shows it in full only then.
    app.config["MASTER_KEY_CREATED"] = not (
        settings["MASTER_KEY"] or (instance / "master_key").exists()
    )
    app.config["MASTER_KEY"] = settings["MASTER_KEY"] or _instance_master_key(instance)
    app.config["MASTER_KEY_SOURCE"] = "env" if settings["MASTER_KEY"] else "instance"
    secret_material = settings["SECRET_KEY"]
    if secret_material is not None and not secret_material.strip():
        raise SystemExit(
            "KEYRELAY_SECRET_KEY is set but blank: provider secrets would be encrypted with an "
            "empty passphrase. Set it to a Fernet key or a long passphrase, or unset it to use "
            f"the key file {instance / 'secret.key'}."
        )
    secret_material = secret_material or load_or_create_key_file(instance / "secret.key")
    app.config["SECRET_KEY"] = secret_material
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_NAME="keyrelay_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings["SESSION_HOURS"]),
        WTF_CSRF_CHECK_DEFAULT=False,  # checked by the dashboard blueprints, not on /v1
        WTF_CSRF_TIME_LIMIT=None,  # valid as long as the login session
        WTF_CSRF_HEADERS=["X-CSRFToken"],
    )
    if settings["TRUSTED_PROXIES"]:
        hops = settings["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)
    logging.basicConfig(level=settings["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(message)s")

    db.init_app(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    with app.app_context():
        database, generated = _initialise_database(instance, settings)
        app.config["ADMIN_PASSWORD_GENERATED"] = generated
        box = SecretBox(secret_material)
        # Keys whose secret this key cannot decrypt, or that an empty key encrypted.
        check_stored_secrets(db.engine, box, datetime.now(UTC))
        gateway = Gateway(
            db.engine,
            box,
            _gateway_settings(settings),
            journal_dir=instance / "journal",
            clock=settings.get("CLOCK"),
            master_key=app.config["MASTER_KEY"],
            database=database,
        )
    # Requests a killed process served but had not written yet (its journal) go in now.
    gateway.books.recover()
    gateway.alerts = BudgetAlerts.from_settings(gateway, settings)
    app.extensions["keyrelay"] = gateway
    atexit.register(gateway.close)
    _install_metrics(settings)
    register_blueprints(app)
    register_commands(app)
    app.after_request(_answer_headers)
    tokens.warm_up()
    gateway.prices.warm_up()
    if os.environ.get("FLASK_RUN_FROM_CLI") != "true":
        # Serving from this instance: `./kr backup restore` refuses while this is held.
        app.extensions["serving_lock"] = backup.hold_serving_lock(instance)
    # Last: the elected worker may start jobs at once (catch-up after downtime).
    scheduler.init_app(app)
    return app


def _install_metrics(settings: dict) -> None:
    """Prometheus metrics for this process (KEYRELAY_METRICS), or none at all."""
    from gateway import metrics

    if not settings["METRICS"]:
        metrics.install(None)
        return
    from gateway.prometheus import PrometheusSink  # not even imported when off

    metrics.install(PrometheusSink())


def _gateway_settings(settings: dict) -> GatewaySettings:
    retry = RetrySettings(
        max_attempts=settings["MAX_ATTEMPTS"],
        deadline=settings["REQUEST_DEADLINE"],
        connect_timeout=settings["CONNECT_TIMEOUT"],
        read_timeout=settings["READ_TIMEOUT"],
        cooldown_seconds=settings["COOLDOWN_SECONDS"],
        failure_threshold=settings["FAILURE_THRESHOLD"],
    )
    breaker = (
        settings["BREAKER_FAILURES"],
        settings["BREAKER_WINDOW"],
        settings["BREAKER_COOLDOWN"],
    )
    if settings["REDIS_FAILURE"] not in ("mixed", "open", "closed"):
        raise SystemExit(
            f"KEYRELAY_REDIS_FAILURE={settings['REDIS_FAILURE']!r}: one of mixed, open, closed"
        )
    return GatewaySettings(
        retry=retry,
        strategy=settings["STRATEGY"],
        use_paid_models=settings["USE_PAID_MODELS"],
        fallback_key=_fallback_key(settings),
        breaker=breaker,
        redis_url=settings["REDIS_URL"],
        redis_failure=settings["REDIS_FAILURE"],
        redis_lease_seconds=settings["REDIS_LEASE_SECONDS"],
        journal_reserve=settings["JOURNAL_RESERVE_BYTES"],
    )


def _fallback_key(settings: dict) -> tuple[str, str, str] | None:
    """KEYRELAY_FALLBACK_* as (provider, secret, base_url), or None when no key is set."""
    from gateway.keys.provider_keys import DEFAULT_BASE_URLS
    from gateway.providers import ADAPTERS

    secret = settings["FALLBACK_KEY"]
    if not secret:
        return None
    provider = settings["FALLBACK_PROVIDER"]
    if provider not in ADAPTERS:
        raise SystemExit(f"KEYRELAY_FALLBACK_PROVIDER={provider!r}: known are {sorted(ADAPTERS)}")
    base_url = settings["FALLBACK_BASE_URL"] or DEFAULT_BASE_URLS.get(provider)
    if not base_url:
        raise SystemExit("KEYRELAY_FALLBACK_BASE_URL is needed for this provider")
    return provider, secret.strip(), base_url.rstrip("/")


MASTER_PREFIX = "kr-master-"


def _instance_master_key(instance: Path) -> str:
    """The generated master key in instance/master_key (0600), created on first start;
    atomically, so every worker reads the same whole key (gateway.keys.secrets.load_or_create)."""
    return load_or_create(
        instance / "master_key",
        lambda: MASTER_PREFIX + pysecrets.token_urlsafe(32),
        _master_key_problem,
        "Delete the file to generate a new master key, or write the one you use into it, "
        "or set KEYRELAY_MASTER_KEY.",
    )


def _master_key_problem(text: str) -> str | None:
    """What is wrong with the content of instance/master_key, or None."""
    if not text:
        return "is empty"
    if any(ch.isspace() for ch in text):
        return "holds more than one word (a master key is one word)"
    if text.startswith(MASTER_PREFIX) and len(text) != len(MASTER_PREFIX) + 43:
        return "holds a cut-short generated master key"
    return None


def _initialise_database(instance: Path, settings: dict) -> tuple[DatabaseIdentity, bool]:
    """Migrate the schema (Alembic), create the `default` profile, the database's identity
    and the first admin once, even with several workers (or hosts) starting. A generated
    admin password is printed here, once. Returns the database's identity and whether
    this run generated the password."""
    from gateway.admin import accounts
    from models import DEFAULT_PROFILE, Profile

    now = datetime.now(UTC)
    # The flock serialises this host's workers; schema.locked the hosts sharing PostgreSQL.
    with open(instance / ".init.lock", "w") as lock, schema.locked(db.engine):
        fcntl.flock(lock, fcntl.LOCK_EX)
        schema.upgrade(db.engine)  # Alembic migrations (migrations/) to head
        if db.session.scalar(select(Profile.id).where(Profile.name == DEFAULT_PROFILE)) is None:
            db.session.add(Profile(name=DEFAULT_PROFILE, created_at=now))
            db.session.flush()
        identity = _database_identity(now)
        username = settings["ADMIN_USERNAME"]
        try:
            generated = accounts.ensure_first_admin(
                db.session, username, settings["ADMIN_PASSWORD"], now
            )
        except InputError as exc:
            raise SystemExit(f"KEYRELAY_ADMIN_USERNAME/ADMIN_PASSWORD: {exc}") from None
        db.session.commit()
        db.session.remove()
    if generated:
        print(
            f"\n  KeyRelay dashboard: first admin '{username}' created with password\n"
            f"      {generated}\n"
            "  It is shown this once (only its hash is stored). Change it with\n"
            f"  `./kr users set-password {username}`.\n",
            file=sys.stderr,
            flush=True,
        )
    return identity, bool(generated)


def _database_identity(now: datetime) -> DatabaseIdentity:
    """The database's UUID (made once, at its first start with this version) and when the
    database was born: its first profile's creation, which is older than the UUID in a
    database made by an earlier version."""
    from models import DATABASE_ID, InstanceMeta, Profile

    row = db.session.get(InstanceMeta, DATABASE_ID)
    if row is None:
        row = InstanceMeta(name=DATABASE_ID, value=uuid.uuid4().hex, created_at=now)
        db.session.add(row)
        db.session.flush()
    born = db.session.scalar(select(func.min(Profile.created_at))) or row.created_at
    return DatabaseIdentity(row.value, min(born, row.created_at))


def register_blueprints(app: Flask) -> None:
    """The proxy under /v1 and /api/v1, and the admin JSON API."""
    from blueprints import (
        admin_api,
        auth,
        dashboard,
        dashboard_members,
        errors,
        member_credits,
        metrics,
        openapi_docs,
        partials,
        playground,
        portal,
        proxy,
        rovodev_api,
        rovodev_pages,
        system,
        webhooks,
    )

    app.register_blueprint(proxy.bp, url_prefix="/v1")
    app.register_blueprint(proxy.bp, url_prefix="/api/v1", name="proxy_api_v1")
    app.register_blueprint(admin_api.bp, url_prefix="/api/admin")
    app.register_blueprint(rovodev_api.bp, url_prefix="/api/admin")
    app.register_blueprint(openapi_docs.bp, url_prefix="/api/admin")
    app.register_blueprint(system.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(rovodev_pages.bp)
    app.register_blueprint(dashboard_members.bp)
    app.register_blueprint(playground.bp)
    app.register_blueprint(portal.bp)
    app.register_blueprint(member_credits.bp)
    app.register_blueprint(portal.api)
    app.register_blueprint(partials.bp, url_prefix="/partials")
    app.register_blueprint(csrf.exempt(webhooks.bp), url_prefix="/api/webhooks")
    errors.register(app)


def register_commands(app: Flask) -> None:
    """`./kr keys …`, `users …`, `jobs …`, `init-db`, `master-key` and the rest."""
    from blueprints.cli import (
        backup_cli,
        client_keys_cli,
        config_cli,
        init_db_command,
        jobs_cli,
        keys_cli,
        master_key_command,
        users_cli,
    )

    app.cli.add_command(master_key_command)
    app.cli.add_command(keys_cli)
    app.cli.add_command(users_cli)
    app.cli.add_command(init_db_command)
    app.cli.add_command(jobs_cli)
    app.cli.add_command(config_cli)
    app.cli.add_command(backup_cli)
    app.cli.add_command(client_keys_cli)
    from blueprints.db_cli import db_cli

    app.cli.add_command(db_cli)
