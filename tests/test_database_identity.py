"""State files bound to their database (issue 10, item 5): a new database beside an old
instance folder inherits neither the old journal nor the old rate windows."""

from __future__ import annotations

import logging
import os
import time

import openai
import pytest
import urllib3
from sqlalchemy import func, select

from app import create_app
from extensions import db
from gateway.ledger import journal
from gateway.ledger.accounting import AttemptRecord, RequestRecord, Usage
from gateway.policy import Outcome
from models import DATABASE_ID, InstanceMeta, RequestLog
from tests.conftest import Admin, LiveServer

pytestmark = pytest.mark.both_databases

SECRET = "sk-identity-0000000000000000"


def _entry(gateway, request_id: str) -> bytes:
    rec = RequestRecord(gateway.clock.now(), "chat.completions", "gpt-4o-mini", False, 1)
    rec.request_id = request_id
    rec.status_code, rec.usage = 200, Usage(3, 4)
    rec.attempts.append(AttemptRecord(1, 0, Outcome.OK, 200, 5))
    row = gateway.books.entry(rec.log_row(), [a.row() for a in rec.attempts], rec.usage_row(), None)
    return journal.encode(row)


def _logged(app, request_id: str) -> int:
    with app.app_context():
        query = select(func.count()).where(RequestLog.request_id == request_id)
        return db.session.scalar(query)


def _database_id(app) -> str:
    with app.app_context():
        return db.session.get(InstanceMeta, DATABASE_ID).value


@pytest.fixture
def build(settings, tmp_path):
    made = []

    def make(database: str, **overrides):
        url = f"sqlite:///{tmp_path / database}"
        made.append(create_app({**settings, "DATABASE_URL": url, **overrides}))
        return made[-1]

    yield make
    for app in made:
        app.extensions["keyrelay"].close()
        with app.app_context():
            db.engine.dispose()


def test_each_database_has_its_own_id_kept_across_starts(build):
    first = build("one.db")
    again = build("one.db")
    other = build("two.db")
    assert _database_id(first) == _database_id(again)
    assert len(_database_id(first)) == 32
    assert _database_id(other) != _database_id(first)


def test_a_journal_is_replayed_only_into_its_own_database(build, caplog):
    old = build("old.db")
    old_id = _database_id(old)
    folder = old.extensions["keyrelay"].books.journal_dir
    folder.mkdir(parents=True, exist_ok=True)
    dead = folder / f"{old_id}.4242-deadbeef.journal"  # a worker of the old database died
    dead.write_bytes(_entry(old.extensions["keyrelay"], "req_old_db"))

    with caplog.at_level(logging.WARNING, logger="gateway.ledger.journal"):
        new = build("new.db")  # a new database, the same instance folder
    assert _logged(new, "req_old_db") == 0
    assert not dead.exists()
    assert (folder / journal.FOREIGN / dead.name).exists()  # kept for its owner
    assert any("belongs to database" in r.message for r in caplog.records)

    back = build("old.db")  # the old database's next start takes it from there
    assert _logged(back, "req_old_db") == 1
    assert not (folder / journal.FOREIGN / dead.name).exists()
    assert _logged(new, "req_old_db") == 0


def test_an_old_unnamed_journal_older_than_the_database_is_not_replayed(build, caplog):
    first = build("first.db")
    folder = first.extensions["keyrelay"].books.journal_dir
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / "4242-0123456789ab.journal"  # an older version's name: no database id
    stale.write_bytes(_entry(first.extensions["keyrelay"], "req_stale"))
    an_hour_ago = time.time() - 3600  # written before this database was made
    os.utime(stale, (an_hour_ago, an_hour_ago))
    fresh = folder / "4243-0123456789ab.journal"  # written after: this database's
    fresh.write_bytes(_entry(first.extensions["keyrelay"], "req_fresh"))

    with caplog.at_level(logging.WARNING, logger="gateway.ledger.journal"):
        second = build("first.db")
    assert _logged(second, "req_stale") == 0
    assert _logged(second, "req_fresh") == 1
    assert (folder / journal.FOREIGN / stale.name).exists()


def _served(app):
    live = LiveServer(app)
    return live, Admin(live.url, urllib3.PoolManager(retries=False))


def test_a_new_database_does_not_inherit_the_old_rate_windows(build, fake):
    """Client key #1 of a new database gets its own window, not old key #1's."""
    old = build("old.db")
    live, admin = _served(old)
    try:
        admin.add_key(SECRET, fake.base_url)
        created = admin.call("POST", "/client-keys", {"name": "app", "rpm_limit": 2}).json()
        assert created["id"] == 1
        sdk = openai.OpenAI(base_url=f"{live.url}/v1", api_key=created["key"], max_retries=0)
        for _ in range(2):
            sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        sdk.close()
    finally:
        live.close()

    new = build("new.db")  # same instance folder, same limits.bin, a new database
    live, admin = _served(new)
    try:
        admin.add_key(SECRET, fake.base_url)
        created = admin.call("POST", "/client-keys", {"name": "app", "rpm_limit": 2}).json()
        assert created["id"] == 1  # the same id as the old database's key
        sdk = openai.OpenAI(base_url=f"{live.url}/v1", api_key=created["key"], max_retries=0)
        for _ in range(2):  # its own window: both admitted
            sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        sdk.close()
    finally:
        live.close()
