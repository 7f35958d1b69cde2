"""Group commit for the request log: one writer, one transaction for every request waiting.

Each request still waits until its own rows are committed before its last byte goes
to the client (F43); under load, many requests share one commit and one roll-up
update instead of paying for their own. The SQL is plain DB-API: on this path
SQLAlchemy's per-statement machinery cost twice what SQLite itself did.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import UTC, date, datetime

from sqlalchemy import Engine

from gateway.store import USAGE_COUNTERS

log = logging.getLogger(__name__)

COMMIT_WAIT_SECONDS = 30.0

_LOG_COLUMNS = (
    "request_id", "created_at", "profile_id", "client_key_id", "endpoint", "model", "provider",
    "provider_key_id", "status_code", "streamed", "input_tokens", "output_tokens",
    "total_tokens", "usage_estimated", "cost_micros", "latency_ms", "ttft_ms",
    "attempt_count", "error",
)  # fmt: skip
_ATTEMPT_COLUMNS = (
    "request_log_id",
    "number",
    "provider_key_id",
    "outcome",
    "status_code",
    "latency_ms",
    "error",
)
_USAGE_KEY = ("day", "profile_id", "provider_key_id", "model")


def _insert(table: str, columns) -> str:
    names = ", ".join(columns)
    return f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + c for c in columns)})"


# RETURNING (SQLite 3.35+, PostgreSQL) gives the row id on both databases.
INSERT_LOG = _insert("request_logs", _LOG_COLUMNS) + " RETURNING id"
INSERT_ATTEMPT = _insert("attempts", _ATTEMPT_COLUMNS)
UPSERT_USAGE = (
    _insert("usage_daily", _USAGE_KEY + USAGE_COUNTERS)
    + f" ON CONFLICT ({', '.join(_USAGE_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = usage_daily.{c} + excluded.{c}" for c in USAGE_COUNTERS)
)
MARK_SUCCESS = (
    "UPDATE provider_keys SET last_used_at = :now, consecutive_failures = 0, "
    "status = CASE WHEN status = 'cooling_down' THEN 'active' ELSE status END, "
    "cooldown_until = CASE WHEN status = 'cooling_down' THEN NULL ELSE cooldown_until END "
    "WHERE id = :key_id"
)
_NAMED = re.compile(r"(?<![:\w]):(\w+)")


class _Entry:
    """One request's rows, and how its request learns they are committed."""

    __slots__ = ("log", "attempts", "usage", "success", "wake", "committed", "lead", "error")

    def __init__(self, log: dict, attempts: list[dict], usage: dict, success) -> None:
        self.log, self.attempts, self.usage, self.success = log, attempts, usage, success
        self.wake = threading.Event()
        self.committed = self.lead = False
        self.error: BaseException | None = None


class Books:
    """Leader/follower group commit: the first request waiting commits everyone's rows.

    A lone request commits its own rows with no thread hand-off; under load, rows that
    arrive during a commit go into the next one, led by the first of them.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.commits = 0  # transactions committed, for tests and metrics
        self.sqlite = engine.dialect.name == "sqlite"
        self._sql = {name: self._dialect_sql(sql) for name, sql in _STATEMENTS.items()}
        self._lock = threading.Lock()
        self._pending: list[_Entry] = []
        self._writing = False

    def _dialect_sql(self, sql: str) -> str:
        # sqlite3 takes :name; psycopg takes %(name)s.
        return sql if self.sqlite else _NAMED.sub(r"%(\1)s", sql)

    def _value(self, value):
        # SQLAlchemy's SQLite DATETIME/DATE text formats, so the ORM reads these rows back.
        if self.sqlite and isinstance(value, datetime):
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        if self.sqlite and isinstance(value, date):
            return value.isoformat()
        return value

    def write(self, log: dict, attempts: list[dict], usage: dict, success) -> None:
        """Add one request's rows and return once they are committed."""
        entry = _Entry(log, attempts, usage, success)
        with self._lock:
            self._pending.append(entry)
            lead = not self._writing
            self._writing = True
        while True:
            if lead:
                self._commit_pending()
            if entry.committed:
                break
            if not entry.wake.wait(COMMIT_WAIT_SECONDS):
                raise TimeoutError("the request log was not committed in time")
            entry.wake.clear()
            lead = entry.lead
        if entry.error is not None:
            raise entry.error

    def _commit_pending(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        try:
            self._commit(batch)
        except Exception:  # noqa: BLE001 - one bad row must not cost the others theirs
            for entry in batch:
                try:
                    self._commit([entry])
                except Exception as exc:  # noqa: BLE001 - its waiter raises it
                    log.exception("writing request %s to the log failed", entry.log["request_id"])
                    entry.error = exc
        with self._lock:
            successor = self._pending[0] if self._pending else None
            if successor is None:
                self._writing = False
            else:
                successor.lead = True
        for entry in batch:
            entry.committed = True
            entry.wake.set()
        if successor is not None:
            successor.wake.set()

    def _commit(self, batch: list[_Entry]) -> None:
        usage: dict[tuple, dict] = {}
        used_at: dict[int, datetime] = {}
        for entry in batch:
            key = tuple(entry.usage[c] for c in _USAGE_KEY)
            total = usage.setdefault(key, dict.fromkeys(USAGE_COUNTERS, 0))
            for counter in USAGE_COUNTERS:
                total[counter] += entry.usage[counter]
            if entry.success is not None:
                key_id, now = entry.success
                used_at[key_id] = max(now, used_at.get(key_id, now))
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            for entry in batch:
                cursor.execute(
                    self._sql["log"], {c: self._value(entry.log[c]) for c in _LOG_COLUMNS}
                )
                (log_id,) = cursor.fetchone()
                for attempt in entry.attempts:
                    attempt["request_log_id"] = log_id
                if entry.attempts:
                    cursor.executemany(self._sql["attempt"], entry.attempts)
            rows = [
                {**dict(zip(_USAGE_KEY, map(self._value, key), strict=True)), **counts}
                for key, counts in usage.items()
            ]
            cursor.executemany(self._sql["usage"], rows)
            if used_at:
                cursor.executemany(
                    self._sql["success"],
                    [{"key_id": k, "now": self._value(t)} for k, t in used_at.items()],
                )
            raw.commit()
            self.commits += 1
        except BaseException:
            raw.rollback()
            raise
        finally:
            raw.close()


_STATEMENTS = {
    "log": INSERT_LOG,
    "attempt": INSERT_ATTEMPT,
    "usage": UPSERT_USAGE,
    "success": MARK_SUCCESS,
}
