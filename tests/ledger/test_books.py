"""The books: journal first, database off the request's path, replay after a crash."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from extensions import db
from gateway.ledger import journal
from gateway.ledger.accounting import AttemptRecord, RequestRecord, Usage, record
from gateway.policy import Outcome
from models import Attempt, RequestLog, UsageDaily

# Roll-ups, batched inserts and reports: the same on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_databases


@pytest.fixture
def gateway(app):
    return app.extensions["keyrelay"]


def booked(gateway, request_id=None, tokens=(3, 4)) -> RequestRecord:
    rec = RequestRecord(gateway.clock.now(), "chat.completions", "gpt-4o-mini", False, 1)
    if request_id:
        rec.request_id = request_id
    rec.status_code, rec.usage = 200, Usage(*tokens)
    rec.attempts.append(AttemptRecord(1, 0, Outcome.OK, 200, 5))
    return rec


def count(app, query):
    with app.app_context():
        return db.session.scalar(query)


def logged(app) -> int:
    return count(app, select(func.count(RequestLog.id)))


@pytest.fixture
def db_path(app):
    return app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")


@pytest.fixture
def write_locked(db_path):
    """Hold SQLite's write lock from outside, as a long admin transaction would."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    yield conn
    conn.execute("ROLLBACK")
    conn.close()


def test_concurrent_writers_share_commits_and_lose_nothing(app, gateway):
    barrier = threading.Barrier(16)

    def write(n: int) -> None:
        barrier.wait()
        for _ in range(10):
            record(gateway.books, booked(gateway, tokens=(n, 1)), gateway.clock.now())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(16)))
    assert gateway.books.flush()
    assert logged(app) == 160
    assert count(app, select(func.count(Attempt.id))) == 160
    assert count(app, select(func.sum(UsageDaily.input_tokens))) == 10 * sum(range(16))
    assert count(app, select(func.sum(UsageDaily.requests))) == 160
    assert gateway.books.commits < 160


def test_a_bad_row_fails_alone(app, gateway, caplog):
    record(gateway.books, booked(gateway, "req_same"), gateway.clock.now())
    barrier = threading.Barrier(8)

    def write(n: int) -> None:
        barrier.wait()
        record(gateway.books, booked(gateway, "req_same" if n == 0 else None), gateway.clock.now())

    with caplog.at_level(logging.ERROR, logger="gateway.ledger.books"):
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(8)))
        assert gateway.books.flush()
    assert logged(app) == 8
    assert [r.message for r in caplog.records] == ["request req_same could not be logged; dropped"]


def test_a_request_is_booked_once(app, gateway):
    rec = booked(gateway)
    record(gateway.books, rec, gateway.clock.now())
    record(gateway.books, rec, gateway.clock.now())
    assert gateway.books.flush()
    assert logged(app) == 1


@pytest.mark.sqlite_only  # SQLite's write lock held from outside
def test_writing_does_not_wait_for_a_locked_database(app, gateway, write_locked):
    started = time.perf_counter()
    for _ in range(20):
        record(gateway.books, booked(gateway), gateway.clock.now())
    assert time.perf_counter() - started < 0.5
    assert not gateway.books.flush(timeout=0.3)  # the writer is waiting for the lock
    (segment,) = (gateway.books.journal_dir).glob("*.journal")
    lines = segment.read_bytes().rstrip(b"\0").splitlines()  # zeros: space kept ahead
    assert len(lines) == 20  # safe from a kill meanwhile
    write_locked.execute("ROLLBACK")
    write_locked.execute("BEGIN")  # the fixture's ROLLBACK ends this one
    assert gateway.books.flush()
    assert logged(app) == 20
    assert not journal.holds_lines(segment)  # emptied once committed


def entry_of(gateway, request_id: str, tokens=(3, 4)) -> dict:
    rec = booked(gateway, request_id, tokens)
    return gateway.books.entry(
        rec.log_row(), [a.row() for a in rec.attempts], rec.usage_row(), None
    )


def test_recovery_replays_a_dead_process_journal_once(app, gateway, caplog):
    record(gateway.books, booked(gateway, "req_committed"), gateway.clock.now())
    assert gateway.books.flush()
    orphan = gateway.books.journal_dir / "4242-deadbeef.journal"
    orphan.write_bytes(
        journal.encode(entry_of(gateway, "req_committed"))  # committed, not yet emptied
        + journal.encode(entry_of(gateway, "req_lost_1", (10, 5)))
        + journal.encode(entry_of(gateway, "req_lost_2", (20, 5)))
        + journal.encode(entry_of(gateway, "req_torn"))[:40]  # killed mid-write
    )
    with caplog.at_level(logging.WARNING, logger="gateway.ledger.journal"):
        assert gateway.books.recover() == 2
    assert any("torn last line" in r.message for r in caplog.records)
    assert not orphan.exists()
    assert gateway.books.recover() == 0
    with app.app_context():
        ids = db.session.scalars(select(RequestLog.request_id).order_by(RequestLog.id)).all()
    assert ids == ["req_committed", "req_lost_1", "req_lost_2"]
    assert count(app, select(func.sum(UsageDaily.total_tokens))) == 7 + 15 + 25
    assert count(app, select(func.count(Attempt.id))) == 3


def test_a_live_process_journal_is_left_alone_and_a_dead_one_is_taken(app, gateway):
    record(gateway.books, booked(gateway), gateway.clock.now())
    assert gateway.books.flush()
    (own,) = gateway.books.journal_dir.glob("*.journal")
    assert gateway.books.recover() == 0 and own.exists()  # this process holds its lock
    gateway.books.recover_every = 0.05
    record(gateway.books, booked(gateway), gateway.clock.now())  # wakes the writer
    orphan = gateway.books.journal_dir / "4243-cafebabe.journal"
    orphan.write_bytes(journal.encode(entry_of(gateway, "req_sibling")))
    deadline = time.monotonic() + 5
    while orphan.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not orphan.exists()  # the running writer replayed it on its own
    assert count(app, select(func.count()).where(RequestLog.request_id == "req_sibling")) == 1


def test_full_segments_rotate_and_go_once_committed(app, gateway, monkeypatch):
    monkeypatch.setattr(journal, "ROTATE_BYTES", 2000)
    for _ in range(30):
        record(gateway.books, booked(gateway), gateway.clock.now())
    assert gateway.books.flush()
    assert logged(app) == 30
    (left,) = gateway.books.journal_dir.glob("*.journal")  # only the current one
    assert not journal.holds_lines(left)


def test_an_unwritable_journal_still_books_the_request(settings, caplog):
    from app import create_app

    instance = Path(settings["INSTANCE_PATH"])
    instance.mkdir(parents=True)
    (instance / "journal").write_text("not a folder")
    app = create_app(settings)
    gateway = app.extensions["keyrelay"]
    try:
        with caplog.at_level(logging.ERROR, logger="gateway.ledger.books"):
            record(gateway.books, booked(gateway), gateway.clock.now())
            assert gateway.books.flush()
        assert logged(app) == 1
        assert "cannot open a booking journal" in caplog.text
    finally:
        gateway.close()


def test_a_segment_keeps_space_ahead_and_replays_up_to_its_zeros(app, gateway, caplog):
    """A segment owns disk space past its last line (zeros); a dead one is replayed up to
    the zeros, which are neither a torn line nor corruption."""
    record(gateway.books, booked(gateway), gateway.clock.now())
    assert gateway.books.flush()
    (own,) = gateway.books.journal_dir.glob("*.journal")
    assert own.stat().st_blocks * 512 >= journal.RESERVE_BYTES  # allocated, not sparse
    orphan = gateway.books.journal_dir / "4244-0badc0ffee00.journal"
    lines = journal.encode(entry_of(gateway, "req_a")) + journal.encode(entry_of(gateway, "req_b"))
    orphan.write_bytes(lines + bytes(64 * 1024))  # died with space kept ahead
    with caplog.at_level(logging.WARNING, logger="gateway.ledger.journal"):
        assert gateway.books.recover() == 2
    assert not any("torn" in r.message or "unreadable" in r.message for r in caplog.records)
