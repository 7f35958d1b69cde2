"""What is PostgreSQL's own: a lock held by another session is a 503 after the busy timeout
(as SQLite's write lock is), and the booking journal survives `kill -9` while the request
log is locked, under gunicorn as in production."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone

import psycopg
import pytest
import urllib3
from cryptography.fernet import Fernet
from sqlalchemy import select

from extensions import db
from gateway.ledger.accounting import AttemptRecord, RequestRecord, Usage, record
from gateway.policy import Outcome
from models import RequestLog
from tests.conftest import MASTER_KEY
from tests.test_durability import Gunicorn, add_key, answer


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
        added = add_key(server, fake.base_url, "sk-durable-pg-0000000001")
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
    price = {"input_per_mtok": "1", "output_per_mtok": "2"}
    refused = http.request(
        "PUT", f"{server.url}/api/admin/prices/gpt%00x", json=price, headers=headers
    )
    assert refused.status == 400, refused.data  # PostgreSQL refuses the NUL
    assert refused.json()["error"]["code"] == "invalid_value"
    # A name longer than its column is refused by the API's document before the database.
    path = "/keys/sync?profile=" + "p" * 300
    refused = http.request("POST", f"{server.url}/api/admin{path}", headers=headers)
    assert refused.status == 400, refused.data
    assert refused.json()["error"]["param"] == "profile"
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


@pytest.fixture
def own_pg():
    """A PostgreSQL server of this test's own, to stop and start again."""
    from tests.pg import running

    with running(pytest.fail) as server:
        yield server


class Traffic:
    """Threads sending chat requests (master key and client keys, streamed or not) until
    stopped; every answer's status, Retry-After, error code and request id. Every fifth
    asks for a profile never seen (no cache has it: the database must answer)."""

    def __init__(self, url: str, tokens: list[str], threads: int = 4) -> None:
        self.url, self.tokens = url, tokens
        self.answers: list[tuple[int, str | None, str | None, str]] = []
        self.running = True
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self, number: int) -> None:
        http = urllib3.PoolManager(retries=False)
        sent = 0
        while self.running:
            sent += 1
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": sent % 2 == 0,
            }
            headers = {"Authorization": f"Bearer {self.tokens[(number + sent) % len(self.tokens)]}"}
            if sent % 5 == 0:
                headers = {
                    "Authorization": f"Bearer {MASTER_KEY}",
                    "X-Profile": f"p{number}.{sent}",
                }
            response = http.request(
                "POST", f"{self.url}/v1/chat/completions", json=body, headers=headers, timeout=30
            )
            code = None
            if response.status != 200:
                code = (response.json().get("error") or {}).get("code")
            self.answers.append(
                (
                    response.status,
                    response.headers.get("Retry-After"),
                    code,
                    response.headers["x-keyrelay-request-id"],
                )
            )

    def count(self) -> int:
        return len(self.answers)

    def stop(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(60)


def wait_for(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_a_postgresql_outage_is_a_503_and_its_rows_come_after(tmp_path, fake, own_pg):
    """PostgreSQL stopped (pg_ctl stop -m fast) under traffic on two gunicorn workers,
    then started again: every answer is a 200 (served from what the caches hold) or a 503
    with Retry-After (what needs the database: a profile never seen), never a 500; once
    the database is back every answer has exactly one log row."""
    url = own_pg.create_database()
    instance, secret_key = tmp_path / "instance", Fernet.generate_key().decode()
    server = Gunicorn(instance, secret_key, DATABASE_URL=url, WORKERS="2")
    http = urllib3.PoolManager(retries=False)
    master = {"Authorization": f"Bearer {MASTER_KEY}"}
    traffic, paused = None, False
    try:
        assert add_key(server, fake.base_url, "sk-durable-pg-0000000001") == 201
        tokens = [MASTER_KEY]
        # A budgeted key needs the database for what it spent: refused while it is down.
        for extra in ({}, {"max_budget": 100}):
            body = {"name": "app", "rpm_limit": None, "tpm_limit": None, **extra}
            made = http.request(
                "POST", f"{server.url}/api/admin/client-keys", json=body, headers=master
            )
            assert made.status == 201, made.data
            tokens.append(made.json()["key"])
        traffic = Traffic(server.url, tokens, threads=6)
        assert wait_for(lambda: traffic.count() >= 40)
        own_pg.pause()
        paused, down_from = True, traffic.count()
        assert wait_for(lambda: traffic.count() >= down_from + 100)
        admin = http.request("GET", f"{server.url}/api/admin/keys", headers=master)
        page = http.request("GET", f"{server.url}/login")
        own_pg.resume()
        paused, up_from = False, traffic.count()
        assert wait_for(lambda: traffic.count() >= up_from + 40)
        traffic.stop()
        answers = traffic.answers
        statuses = Counter(status for status, *_ in answers)
        during = answers[down_from:up_from]
        print(f"answers {len(answers)}: {dict(statuses)}; during the outage {len(during)}")
        assert set(statuses) == {200, 404, 503}, statuses
        assert {code for status, _, code, _ in answers if status == 404} == {"profile_not_found"}
        refused = [a for a in answers if a[0] == 503]
        assert all(retry and retry.isdigit() for _, retry, _, _ in refused)
        assert {code for *_, code, _ in refused} <= {"database_unavailable"}
        assert admin.status == 503 and admin.headers["Retry-After"].isdigit()
        assert admin.json()["error"]["code"] == "database_unavailable"
        assert page.status in (200, 503) and b"Traceback" not in page.data
        assert max(Counter(request_id for *_, request_id in answers).values()) == 1

        def logged() -> Counter:
            with psycopg.connect(_dsn(url)) as reader:
                found = reader.execute("SELECT request_id, status_code FROM request_logs")
                return Counter(found.fetchall())

        expected = Counter((request_id, status) for status, _, _, request_id in answers)
        assert wait_for(lambda: logged() == expected), (
            f"{len(expected - logged())} answers without their row, "
            f"{len(logged() - expected)} rows too many"
        )
    finally:
        if traffic is not None:
            traffic.stop()
        if paused:
            own_pg.resume()
        server.kill()


def test_the_dashboard_says_the_database_is_down(settings, own_pg):
    """A dashboard page while PostgreSQL is stopped: a readable 503 page, no traceback."""
    from app import create_app
    from tests.conftest import Web

    settings["DATABASE_URL"] = own_pg.create_database()
    app = create_app(settings)
    try:
        web = Web(app)
        assert web.get("/keys").status_code == 200
        own_pg.pause()
        try:
            page = web.get("/keys")
            form = web.post("/profiles", {"name": "team"})
        finally:
            own_pg.resume()
        for answer in (page, form):
            assert answer.status_code == 503
            assert answer.headers["Retry-After"].isdigit()
            assert "database cannot be reached" in answer.text
            assert "Traceback" not in answer.text
        assert web.get("/keys").status_code == 200  # back by itself
    finally:
        app.extensions["keyrelay"].close()
        with app.app_context():
            db.engine.dispose()
