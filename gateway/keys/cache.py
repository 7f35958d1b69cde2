"""Each profile's provider keys, read from the database at most once a second per process.

This process patches the cached rows with what it does itself (tokens booked, keys
used, including bookings its writer has not committed yet); changes made by other
workers or instances show within `ttl` seconds.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta

from sqlalchemy import Engine

from gateway import store
from gateway.errors import database_down
from gateway.keys import lifecycle
from gateway.store import KeyRow
from models.provider_keys import ACTIVE

# A key's last_used_at is rewritten at most this often: it orders keys, nothing finer.
TOUCH_INTERVAL = timedelta(seconds=1)


class KeyCache:
    """Short-lived snapshots of (profile, day) → keys, kept current by this process."""

    def __init__(self, engine: Engine, unapplied=None, ttl: float = 1.0) -> None:
        self.engine = engine
        self.ttl = ttl
        # Tokens this process booked that the writer has not committed yet (books.py).
        self.unapplied = unapplied or (lambda key_id, day: 0)
        # Last uses this process wrote (key id -> when), for the same reason: a snapshot
        # read before the writer committed them would put a key just used back at the head
        # of the rotation (round-robin, least recently used).
        self._used: dict[int, datetime] = {}
        self._entries: dict[tuple[int, date], tuple[list[KeyRow], float]] = {}
        # Tells the other hosts' processes (Redis pub/sub, set by the Gateway when shared).
        self.on_forget = None

    def keys(self, profile_id: int, today: date) -> list[KeyRow]:
        """The profile's keys with today's usage, from the snapshot if it is fresh."""
        hit = self._entries.get((profile_id, today))
        if hit is not None and time.monotonic() - hit[1] < self.ttl:
            return hit[0]
        try:
            with self.engine.connect() as conn:
                rows = store.load_keys(conn, profile_id, today)
        except Exception as exc:
            if hit is None or not database_down(exc):
                raise
            # The database is down: the keys as last read (and patched since) serve.
            self._entries[(profile_id, today)] = (hit[0], time.monotonic())
            return hit[0]
        for row in rows:
            pending = self.unapplied(row.id, today)
            row.used_today += pending
            row.used_month += pending
            used = self._used.get(row.id)
            if used is not None and (row.last_used_at is None or row.last_used_at < used):
                row.last_used_at = used
        self._entries[(profile_id, today)] = (rows, time.monotonic())
        return rows

    def touched(self, key_id: int, now: datetime) -> None:
        """This process wrote the key's last use (booked, perhaps not committed yet)."""
        self._used[key_id] = now

    def forget(self) -> None:
        """Drop every snapshot: a key's state changed in the database (and tell the
        other processes, when they share Redis)."""
        self._entries.clear()
        if self.on_forget is not None:
            self.on_forget()

    def drop(self) -> None:
        """Drop every snapshot, telling nobody: another process changed a key."""
        self._entries.clear()


def needs_touch(key: KeyRow, now: datetime) -> bool:
    """Whether a success must be written to the key row (state to clear, or stale last use)."""
    return (
        key.consecutive_failures > 0
        or key.status != ACTIVE
        or key.last_used_at is None
        or now - key.last_used_at >= TOUCH_INTERVAL
    )


def apply_booking(key: KeyRow, tokens: int, cost: int, touched: bool, now: datetime) -> None:
    """Mirror a booked request in the cached row, as the database now has it."""
    key.used_today += tokens
    key.used_month += tokens
    key.cost_today += cost
    key.cost_month += cost
    key.cost_total += cost
    if touched:
        key.last_used_at = now
        key.consecutive_failures = 0
        if key.status in lifecycle.ANSWERED_FROM:  # the cached row follows the stored one
            lifecycle.apply(lifecycle.ANSWERED, key)
