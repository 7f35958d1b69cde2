"""CPU per request after the upstream's answer: booking on the serving thread, and the
request-log writer's commit per request at a given batch size.

CPU time (`time.thread_time`), not wall time, so the figures hold on a loaded machine.
One process, a fresh SQLite database in a temporary folder, a chat request with one
attempt and usage, booked as the proxy books it (price, ticket, journal line, key cache).

    PYTHONPATH=$PWD .venv/bin/python bench/booking.py
    PYTHONPATH=$PWD .venv/bin/python bench/booking.py --requests 20000 --batches 5,25,100
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402

from app import create_app  # noqa: E402
from gateway.ledger.accounting import AttemptRecord, RequestRecord, Usage  # noqa: E402
from gateway.policy import Outcome  # noqa: E402
from gateway.store import KeyRow  # noqa: E402


def record(profile_id: int | None) -> RequestRecord:
    """A served chat request as the relay leaves it for booking."""
    rec = RequestRecord(datetime.now(UTC), "chat.completions", "gpt-4o-mini", False, profile_id)
    rec.provider, rec.provider_key_id, rec.status_code = "openai", 1, 200
    rec.usage, rec.latency_ms = Usage(9, 9), 1
    rec.attempts.append(AttemptRecord(1, 1, Outcome.OK, 200, 1))
    return rec


def booking_cpu(gateway, requests: int) -> float:
    """µs of the serving thread's CPU per `Booking.book` (writer thread running)."""
    now = datetime.now(UTC)
    key = KeyRow(1, "openai", "k", "http://x", b"", ["*"], None, None, "active", None, 0, now, 0)
    spent = 0.0
    for number in range(requests):
        rec, ticket = record(1), gateway.admission.ticket()
        started = time.thread_time()
        gateway.booking.book(rec, ticket, key, strict=True)
        spent += time.thread_time() - started
        if number % 50 == 49:
            time.sleep(0.002)  # a steady flow: the writer commits in batches meanwhile
    gateway.books.flush()
    return 1e6 * spent / requests


def writer_cpu(gateway, size: int, requests: int) -> float:
    """µs of CPU per request for committing batches of `size` requests (the writer's
    SQL: log rows, attempts, usage roll-up), on a connection of its own."""
    books = gateway.books

    def entry() -> dict:
        rec = record(None)  # no profile: no roll-up row against a key that is not there
        rec.provider_key_id = None
        return books.entry(rec.log_row(), [a.row() for a in rec.attempts], rec.usage_row(), None)

    batches = [[entry() for _ in range(size)] for _ in range(max(3, requests // size))]
    conn = books.connect()
    try:
        books._commit(conn, batches[0])  # warm the statement cache
        started = time.thread_time()
        for batch in batches[1:]:
            books._commit(conn, batch)
        return 1e6 * (time.thread_time() - started) / ((len(batches) - 1) * size)
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--batches", default="5,25,100", help="writer batch sizes to time")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the fresh database's migrations
    folder = tempfile.mkdtemp(prefix="keyrelay-booking-")
    app = create_app(
        {
            "INSTANCE_PATH": os.path.join(folder, "instance"),
            "MASTER_KEY": "kr-bench-" + "x" * 24,
            "SECRET_KEY": Fernet.generate_key().decode(),
            "ADMIN_PASSWORD": "bench-pass-123",
            "SCHEDULER": False,
        }
    )
    gateway = app.extensions["keyrelay"]
    try:
        booking_cpu(gateway, 1000)  # warm-up
        figures = [booking_cpu(gateway, args.requests) for _ in range(args.repeats)]
        print(f"booking, serving thread: {statistics.median(figures):.1f} µs CPU per request")
        for size in (int(s) for s in args.batches.split(",")):
            figures = [writer_cpu(gateway, size, args.requests) for _ in range(args.repeats)]
            print(
                f"writer, batches of {size:>3}: {statistics.median(figures):.1f} µs CPU per request"
            )
    finally:
        gateway.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
