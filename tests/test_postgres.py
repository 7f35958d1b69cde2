"""What is PostgreSQL's own: a lock held by another session is a 503 after the busy timeout
(as SQLite's write lock is), and the booking journal survives `kill -9` while the request
log is locked, under gunicorn as in production."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
import urllib3
from cryptography.fernet import Fernet
from sqlalchemy import select

from extensions import db
from gateway.accounting import AttemptRecord, RequestRecord, Usage, record
from gateway.policy import Outcome
from models import RequestLog
from tests.conftest import MASTER_KEY
from tests.test_durability import Gunicorn, answer


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def settings(settings, pg_url):
    settings["DATABASE_URL"] = pg_url
    settings["DB_BUSY_TIMEOUT"] = 0.3  # a locked table answers in 0.3 s, not 10 s
    return settings


def test_a_locked_table_is_a_503_and_loses_nothing(settings, server, http, admin, fake):
    with psycopg.connect(_dsn(settings["DATABASE_URL"])) as locker:
        locker.execute("LOCK TABLE provider_keys IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        refused = http.request(
            "POST",
            f"{server.url}/api/admin/keys",
            json={"provider": "openai", "name": "k", "secret": "sk-pg-lock-00000001"},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=5,  # without the lock timeout the call would wait for the lock
        )
        elapsed = time.monotonic() - started
        locker.rollback()
    assert refused.status == 503, refused.data
    assert refused.headers["Retry-After"].isdigit()
    assert refused.json()["error"]["code"] == "database_busy"
    assert elapsed < 5  # the setting, not the 10 s default
    assert admin.call("GET", "/keys").json()["data"] == []
    added = admin.add_key("sk-pg-lock-00000001", fake.base_url)
    assert added["status"] == "active"


def test_answers_are_booked_after_a_kill_9_with_the_log_locked(tmp_path, fake, pg_url):
    """Two gunicorn workers on PostgreSQL; the request log is locked from outside, so the
    answers live only in the journals when the server dies. The next start books them
    once, with their roll-ups."""
    instance, secret_key = tmp_path / "instance", Fernet.generate_key().decode()
    env = {"DATABASE_URL": pg_url, "WORKERS": "2"}
    server = Gunicorn(instance, secret_key, **env)
    locker = psycopg.connect(_dsn(pg_url))
    try:
        added = server_call(server, fake)
        assert added == 201
        locker.execute("LOCK TABLE request_logs IN EXCLUSIVE MODE")  # reads go on
        ids = {answer(server, stream) for stream in (False, True, False)}
        with psycopg.connect(_dsn(pg_url)) as reader:
            assert reader.execute("SELECT count(*) FROM request_logs").fetchone() == (0,)
        assert list(instance.glob("journal/*.journal"))
    finally:
        server.kill()
        locker.rollback()
        locker.close()
    tokens = sum(usage["total_tokens"] for usage in fake.usage_reported)
    for _ in range(2):  # a second start finds nothing left to replay
        Gunicorn(instance, secret_key, **env).kill()
        with psycopg.connect(_dsn(pg_url)) as reader:
            logged = reader.execute("SELECT request_id, status_code FROM request_logs").fetchall()
            total = reader.execute("SELECT sum(total_tokens) FROM usage_daily").fetchone()
        assert sorted(logged) == sorted((request_id, 200) for request_id in ids)
        assert total == (tokens,)


def server_call(server: Gunicorn, fake) -> int:
    """Add a provider key over the admin API; returns the status."""
    body = {
        "provider": "openai",
        "name": "k",
        "secret": "sk-durable-pg-0000000001",
        "base_url": fake.base_url,
    }
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    return urllib3.request(
        "POST", f"{server.url}/api/admin/keys", json=body, headers=headers
    ).status


def test_the_writer_stores_utc_whatever_the_zone_it_is_given(app):
    """PostgreSQL's `timestamp without time zone` drops an offset instead of converting:
    the writer hands it naive UTC."""
    gateway = app.extensions["keyrelay"]
    started = datetime(2026, 11, 23, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    rec = RequestRecord(started, "chat.completions", "gpt-4o-mini", False, 1)
    rec.status_code, rec.usage = 200, Usage(3, 4)
    rec.attempts.append(AttemptRecord(1, 0, Outcome.OK, 200, 5))
    record(gateway.books, rec, started)
    assert gateway.books.flush()
    with app.app_context():
        stored = db.session.scalar(select(RequestLog.created_at))
    assert stored == datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_text_postgresql_refuses_is_a_400_or_fitted_into_the_log(app, server, http, admin, fake):
    """SQLite stores NUL characters and text past a column's length; PostgreSQL refuses
    them. An admin call gets a 400, and a client's odd model name still has its log row."""
    admin.add_key("sk-pg-text-000000000001", fake.base_url)
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    for path in ("/prices/gpt%00x", "/keys/sync?profile=" + "p" * 300):
        method = "PUT" if path.startswith("/prices") else "POST"
        body = {"input_per_mtok": "1", "output_per_mtok": "2"} if method == "PUT" else None
        refused = http.request(method, f"{server.url}/api/admin{path}", json=body, headers=headers)
        assert refused.status == 400, refused.data
        assert refused.json()["error"]["code"] == "invalid_value"
    model = "gpt-4o-mini\x00" + "x" * 300
    answer = http.request(
        "POST",
        f"{server.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
    )
    assert answer.status == 200, answer.data  # the key serves every model
    assert app.extensions["keyrelay"].books.flush()
    (logged,) = admin.logs()
    assert logged["status_code"] == 200 and logged["total_tokens"] > 0
    assert logged["requested_model"] == ("gpt-4o-mini\ufffd" + "x" * 300)[:128]
