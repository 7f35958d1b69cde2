"""Fixtures: a fake upstream, KeyRelay served over real HTTP, a movable clock, admin calls."""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anthropic
import openai
import pytest
import urllib3
from cryptography.fernet import Fernet
from werkzeug.serving import make_server

from app import create_app
from extensions import db
from tests.fake_upstream import FakeUpstream

MASTER_KEY = "kr-test-master-key"
ADMIN_PASSWORD = "admin-pass-123"
MODELS = ["gpt-4o-mini", "gpt-4o"]


class ManualClock:
    """A clock the test moves; the gateway reads it instead of the wall clock."""

    def __init__(self) -> None:
        self.current = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta) -> None:
        self.current += timedelta(**delta)

    def sleep(self, seconds: float) -> None:
        """What the gateway's waits do here: time passes at once."""
        self.slept.append(seconds)
        self.current += timedelta(seconds=seconds)


class Admin:
    """The admin JSON API over HTTP with the master key."""

    def __init__(self, base: str, http: urllib3.PoolManager) -> None:
        self.base, self.http = base, http

    def call(self, method: str, path: str, body=None, key: str = MASTER_KEY, raw=None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if raw is not None:
            headers["Content-Type"] = "application/json"
        return self.http.request(
            method, f"{self.base}/api/admin{path}", json=body, body=raw, headers=headers
        )

    def add_key(self, secret: str, base_url: str, **fields) -> dict:
        """POST a provider key. Most tests drive the proxy with a key that serves whatever
        model they ask for and count the upstream's requests: unless the test says
        otherwise, the key declares `*` and is saved untested. The catalog and the test on
        creation have their own tests (test_catalog.py), which pass `models`/`test`."""
        fields.setdefault("models", "*")
        fields.setdefault("test", False)
        body = {"provider": "openai", "name": fields.pop("name", "key"), "secret": secret}
        response = self.call("POST", "/keys", {**body, "base_url": base_url, **fields})
        assert response.status == 201, response.data
        return response.json()

    def key(self, key_id: int) -> dict:
        return self.call("GET", f"/keys/{key_id}").json()

    def logs(self, **params) -> list[dict]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        return self.call("GET", f"/logs?{query}").json()["data"]

    def stats(self, profile: str | None = None) -> dict:
        return self.call("GET", "/stats" + (f"?profile={profile}" if profile else "")).json()


class LiveServer:
    """The app on a loopback port in a background thread (werkzeug, threaded)."""

    def __init__(self, app) -> None:
        self.app = app
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.port}"
        # A short poll: shutdown() waits for the loop to notice (0.5 s by default, per server).
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@contextmanager
def live_app(settings: dict, **overrides) -> Iterator[tuple]:
    """A second app (with settings of its own) served on loopback; closed afterwards."""
    app = create_app({**settings, **overrides})
    live = LiveServer(app)
    try:
        yield app, live
    finally:
        live.close()
        app.extensions["keyrelay"].close()
        with app.app_context():
            db.engine.dispose()


@pytest.fixture(autouse=True, scope="session")
def _quiet_request_logs():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@pytest.fixture(autouse=True, scope="session")
def _cheap_password_hashes():
    """Dashboard passwords hashed in this process with scrypt at n=2**10 instead of
    werkzeug's 2**15: still salted scrypt, but ~3 ms of CPU instead of ~100 ms for every app
    (its first admin) and every login, which was minutes of the suite's CPU. The hash's cost
    is not under test; a hash's own parameters are what checking it uses."""
    from werkzeug.security import generate_password_hash

    from gateway import members
    from gateway.admin import accounts

    cheap = functools.partial(generate_password_hash, method="scrypt:1024:8:1")
    patch = pytest.MonkeyPatch()
    patch.setattr(accounts, "generate_password_hash", cheap)
    patch.setattr(members, "generate_password_hash", cheap)
    patch.setattr(accounts, "_DUMMY_HASH", cheap("keyrelay-not-a-password"))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def oidc(tmp_path_factory):
    """A real OpenID Connect provider (npm `oidc-provider`) on a free port for the run, with
    one client; `oidc.client` holds the issuer, client id and secret (tests/oidc_provider.py)."""
    from tests.oidc_provider import CALLBACK_PATH, OidcProvider

    provider = OidcProvider(tmp_path_factory.mktemp("oidc"), [f"http://127.0.0.1{CALLBACK_PATH}"])
    yield provider
    provider.close()


@pytest.fixture
def fake():
    with FakeUpstream(models=MODELS) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium through Playwright (tests/browser.py), one per module."""
    from playwright.sync_api import sync_playwright

    from tests.browser import FLAGS, ensure_chromium

    path = ensure_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def clock():
    return ManualClock()


def pytest_generate_tests(metafunc):
    """Tests marked `both_databases` run twice: on SQLite and on PostgreSQL."""
    marked = metafunc.definition.get_closest_marker
    if (
        "db_backend" in metafunc.fixturenames
        and marked("both_databases")
        and not marked("sqlite_only")
    ):
        metafunc.parametrize("db_backend", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server for the session (installed if missing)."""
    from tests.pg import running

    with running(pytest.skip) as server:
        yield server


@pytest.fixture
def pg_url(pg_server):
    """A fresh PostgreSQL database for one test; dropped afterwards."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def db_backend(request):
    """`sqlite` (the default; KEYRELAY_TEST_DATABASE=postgresql runs every test on
    PostgreSQL) or both for tests marked `both_databases`."""
    if request.node.get_closest_marker("sqlite_only"):
        return "sqlite"
    return getattr(request, "param", os.environ.get("KEYRELAY_TEST_DATABASE", "sqlite"))


@pytest.fixture
def database_url(request, db_backend):
    """KEYRELAY_DATABASE_URL for the test: None (SQLite in the instance) or a fresh
    PostgreSQL database."""
    if db_backend == "postgresql":
        return request.getfixturevalue("pg_url")
    return None


@pytest.fixture
def settings(tmp_path, clock, database_url):
    """Test overrides for create_app; a test may change them before `app` is built."""
    return {
        "DATABASE_URL": database_url,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "MASTER_KEY": MASTER_KEY,
        "SECRET_KEY": Fernet.generate_key().decode(),
        "CLOCK": clock,
        "READ_TIMEOUT": 1.0,
        "CONNECT_TIMEOUT": 1.0,
        "REQUEST_DEADLINE": 10.0,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LOGIN_DELAY": 0.01,
        "SCHEDULER": False,  # a test that needs it turns it on (test_scheduler.py)
    }


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """An empty SQLite database at the schema's head, migrated once per test process."""
    from sqlalchemy import create_engine

    from gateway import schema

    path = tmp_path_factory.mktemp("migrated") / "keyrelay.db"
    engine = create_engine(f"sqlite:///{path}")
    schema.upgrade(engine)
    engine.dispose()
    return path


def _from_migrated(request, settings: dict) -> None:
    """Start the test's SQLite database as a copy of `migrated_sqlite`: every migration
    run again for every app was ~65 ms of CPU each, minutes of the suite. The app's own
    start-up (profile, identity, first admin) still runs. Not for a database already there,
    PostgreSQL, or tests marked `own_migrations`."""
    instance = settings.get("INSTANCE_PATH")
    if not instance or settings.get("DATABASE_URL"):
        return
    if request.node.get_closest_marker("own_migrations"):
        return
    database = Path(instance) / "keyrelay.db"
    if not database.exists():
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), database)


@pytest.fixture
def app(request, settings):
    _from_migrated(request, settings)
    app = create_app(settings)
    yield app
    app.extensions["keyrelay"].close()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def server(app):
    live = LiveServer(app)
    yield live
    live.close()


@pytest.fixture
def http():
    pool = urllib3.PoolManager(retries=False)
    yield pool
    pool.clear()


@pytest.fixture
def admin(server, http):
    return Admin(server.url, http)


@pytest.fixture
def client(server):
    """The official OpenAI SDK, pointed at KeyRelay by base_url only."""
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=MASTER_KEY, max_retries=0)
    yield sdk
    sdk.close()


@pytest.fixture
def messages_sdk(server):
    """The official Anthropic SDK, pointed at KeyRelay by base_url only."""
    sdk = anthropic.Anthropic(base_url=server.url, api_key=MASTER_KEY, max_retries=0)
    yield sdk
    sdk.close()


def chat(model: str = "gpt-4o-mini", content: str = "Say hello", **extra) -> dict:
    """A chat request body."""
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


class Web:
    """The dashboard through Flask's test client, logged in; posts carry the CSRF token."""

    def __init__(self, app, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
        self.client = app.test_client()
        self.token = None
        response = self.login(username, password)
        assert response.status_code == 302, response.text

    def login(self, username: str, password: str, **kwargs):
        page = self.client.get("/login")
        self.token = CSRF_FIELD.search(page.text).group(1)
        data = {"username": username, "password": password, "csrf_token": self.token}
        response = self.client.post("/login", data=data, **kwargs)
        if response.status_code == 302:
            self.token = CSRF_FIELD.search(self.client.get("/").text).group(1)
        return response

    def get(self, path: str, **kwargs):
        return self.client.get(path, **kwargs)

    def post(self, path: str, data: dict | None = None, htmx: bool = False, **kwargs):
        headers = kwargs.pop("headers", {})
        if htmx:
            headers = {**headers, "HX-Request": "true", "X-CSRFToken": self.token}
        return self.client.post(
            path, data={"csrf_token": self.token, **(data or {})}, headers=headers, **kwargs
        )


@pytest.fixture
def web(app):
    """The dashboard as the first admin."""
    return Web(app)


def make_viewer(app, username: str = "vera", password: str = "viewer-pass-1") -> Web:
    """A viewer user, logged in."""
    from gateway.admin import accounts

    with app.app_context():
        accounts.create_user(db.session, username, password, "viewer", datetime.now(UTC))
        db.session.commit()
    return Web(app, username, password)
