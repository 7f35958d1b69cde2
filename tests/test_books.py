"""Group commit of the request log: concurrent writers share commits; a bad row fails alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from extensions import db
from gateway.accounting import AttemptRecord, RequestRecord, Usage, record
from gateway.policy import Outcome
from models import Attempt, RequestLog, UsageDaily


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


def test_concurrent_writers_share_commits_and_lose_nothing(app, gateway):
    barrier = threading.Barrier(16)

    def write(n: int) -> None:
        barrier.wait()
        for _ in range(10):
            record(gateway.books, booked(gateway, tokens=(n, 1)), gateway.clock.now())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(16)))
    assert count(app, select(func.count(RequestLog.id))) == 160
    assert count(app, select(func.count(Attempt.id))) == 160
    assert count(app, select(func.sum(UsageDaily.input_tokens))) == 10 * sum(range(16))
    assert count(app, select(func.sum(UsageDaily.requests))) == 160
    assert gateway.books.commits < 160


def test_a_bad_row_fails_alone(app, gateway):
    record(gateway.books, booked(gateway, "req_same"), gateway.clock.now())
    barrier = threading.Barrier(8)
    errors = []

    def write(n: int) -> None:
        barrier.wait()
        try:
            record(
                gateway.books, booked(gateway, "req_same" if n == 0 else None), gateway.clock.now()
            )
        except Exception as exc:  # noqa: BLE001 - the driver's own IntegrityError
            errors.append(exc)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))
    assert len(errors) == 1 and "UNIQUE" in str(errors[0])
    assert count(app, select(func.count(RequestLog.id))) == 8


def test_a_request_is_booked_once(app, gateway):
    rec = booked(gateway)
    record(gateway.books, rec, gateway.clock.now())
    record(gateway.books, rec, gateway.clock.now())
    assert count(app, select(func.count(RequestLog.id))) == 1
