"""The request log and usage roll-ups, written off the request's path.

`write` appends the request's rows to this process's journal (one `os.write`: safe from a
`kill -9` once it returns) and queues them; a writer thread commits everything queued in
one transaction, so under load many requests share a commit, and no request waits for
SQLite, its fsyncs or its WAL checkpoints. Segments left by a process that died are
replayed at start and every few seconds, skipping requests already in the log, so a
request is counted once whatever happened to the process that served it.

The SQL is plain DB-API on a connection the writer owns: SQLAlchemy's per-statement
machinery cost twice what SQLite itself did, and its pool's locks are green under gevent
while the writer is a real OS thread (so SQLite's blocking calls never stall the hub).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import Engine, String

from gateway.errors import database_down
from gateway.keys import lifecycle
from gateway.keys.messages import SYSTEM
from gateway.ledger import journal
from gateway.store import USAGE_COUNTERS, attempts_t, logs_t, usage_t

log = logging.getLogger(__name__)

RECOVER_EVERY_SECONDS = 5.0  # a sibling worker's journal, after it died
# How long the writer lets bookings gather before a commit: per request, a commit of 25
# costs a third of a commit of one. Readers that must see everything call flush().
BATCH_WINDOW_SECONDS = 0.05
RETRY_SECONDS = (0.05, 0.2, 1.0, 2.0)

_LOG_COLUMNS = (
    "request_id", "created_at", "profile_id", "client_key_id", "endpoint", "model",
    "requested_model", "provider",
    "provider_key_id", "status_code", "streamed", "input_tokens", "output_tokens",
    "total_tokens", "cache_write_tokens", "cache_read_tokens", "usage_estimated",
    "cost_micros", "latency_ms", "ttft_ms",
    "attempt_count", "error", "context_pruned",
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


def _text_limits(table) -> dict[str, int | None]:
    return {c.name: c.type.length for c in table.columns if isinstance(c.type, String)}


# What PostgreSQL refuses and SQLite stores: text longer than its column, NUL characters.
_LIMITS = {"log": _text_limits(logs_t), "attempt": _text_limits(attempts_t)}
_LIMITS["usage"] = _text_limits(usage_t)


def _fit(row: dict, limits: dict[str, int | None]) -> dict:
    """The row's text as PostgreSQL takes it: NUL replaced, cut to the column's length (a
    client's odd model name must not cost the request its log row)."""
    for name, limit in limits.items():
        value = row.get(name)
        if isinstance(value, str):
            if "\x00" in value:
                value = value.replace("\x00", "\ufffd")
            row[name] = value[:limit] if limit else value
    return row


def _insert(table: str, columns) -> str:
    names = ", ".join(columns)
    return f"INSERT INTO {table} ({names}) VALUES ({', '.join(':' + c for c in columns)})"


# Log rows per INSERT statement: 22 columns each, well under SQLite's 32,766 variables.
MAX_ROWS_PER_INSERT = 256
INSERT_ATTEMPT = _insert("attempts", _ATTEMPT_COLUMNS)
UPSERT_USAGE = (
    _insert("usage_daily", _USAGE_KEY + USAGE_COUNTERS)
    + f" ON CONFLICT ({', '.join(_USAGE_KEY)}) DO UPDATE SET "
    + ", ".join(f"{c} = usage_daily.{c} + excluded.{c}" for c in USAGE_COUNTERS)
)
MARK_SUCCESS = (
    "UPDATE provider_keys SET last_used_at = :now, consecutive_failures = 0, last_error = NULL, "
    + lifecycle.ANSWERED_SQL  # back from an ended cooldown
    + " WHERE id = :key_id"
)
# A key whose cooldown an answer ended: audited (actor `system`) just before MARK_SUCCESS
# makes it active; a key not cooling down adds no row. Only keys due a touch come here.
COOLDOWN_ENDED = (
    "INSERT INTO audit_log (at, actor, action, target) "
    f"SELECT :now, '{SYSTEM}', 'key.cooldown_ended', 'key:' || id FROM provider_keys "
    "WHERE id = :key_id AND status = 'cooling_down'"
)
# A member's key: its request's cost comes off the member's prepaid balance and onto their
# running total, in the same transaction as the request's row (wallet.py relies on the
# three moving together).
CHARGE_MEMBER = (
    "UPDATE members SET balance_micros = balance_micros - :cost, "
    "spent_micros = spent_micros + :cost "
    "WHERE user_id = (SELECT member_id FROM client_keys WHERE id = :client_key_id)"
)
_NAMED = re.compile(r"(?<![:\w]):(\w+)")
_STATEMENTS = {
    "attempt": INSERT_ATTEMPT,
    "usage": UPSERT_USAGE,
    "ended": COOLDOWN_ENDED,
    "success": MARK_SUCCESS,
    "member": CHARGE_MEMBER,
}


def _os_threads():
    """Real OS thread primitives and sleep, also when gevent has patched the stdlib."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        import _thread

        return _thread.start_new_thread, _thread.allocate_lock, time.sleep
    start, allocate = monkey.get_original("_thread", ["start_new_thread", "allocate_lock"])
    return start, allocate, monkey.get_original("time", "sleep")


_start_thread, _allocate_lock, _os_sleep = _os_threads()


class Books:
    """Journal, queue and writer thread of one process."""

    def __init__(
        self,
        engine: Engine,
        journal_dir: Path,
        database: journal.DatabaseIdentity | None = None,
        reserve: int = 0,
    ) -> None:
        self.engine = engine
        self.journal_dir = journal_dir
        self.database = database
        self.reserve = reserve or journal.RESERVE_BYTES
        # Below this much room kept ahead, the journal takes answers only, and no new
        # request is admitted: what is left is for the answers on their way.
        self.headroom = self.reserve // 4
        self.sqlite = engine.dialect.name == "sqlite"
        self.dbapi = engine.dialect.loaded_dbapi
        self._sql = {name: self._dialect_sql(sql) for name, sql in _STATEMENTS.items()}
        self._multi: dict[int, str] = {}
        self.commits = 0  # transactions committed, for tests and metrics
        self.replayed = 0  # requests recovered from dead processes' journals
        self.recover_every = RECOVER_EVERY_SECONDS
        self.batch_window = BATCH_WINDOW_SECONDS
        self._lock = _allocate_lock()  # a real lock: the writer is a real thread
        self._signal = _allocate_lock()  # held while the writer has nothing to do
        self._signal.acquire()
        self._hurry = _allocate_lock()  # released by flush(): commit now, skip the window
        self._hurry.acquire()
        self._queue: list[tuple[dict, journal.Segment | None]] = []
        self._segment: journal.Segment | None = None
        self._retired: list[journal.Segment] = []
        self._unapplied: dict[tuple[int, date], int] = defaultdict(int)
        self._written = self._done = 0
        self._pid = 0
        self._stopping = False

    @property
    def _database_id(self) -> str:
        return self.database.id if self.database is not None else ""

    def _dialect_sql(self, sql: str) -> str:
        # sqlite3 takes :name; psycopg takes %(name)s.
        return sql if self.sqlite else _NAMED.sub(r"%(\1)s", sql)

    def db_time(self, value: datetime) -> str:
        """A datetime as naive UTC text: SQLAlchemy's SQLite format (so the ORM reads these
        rows back), and what PostgreSQL's `timestamp without time zone` takes (it would
        drop an offset, not convert it)."""
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    def entry(self, log_row: dict, attempts: list[dict], usage: dict, success) -> dict:
        """One request's rows, ready for the journal and the driver (times as text)."""
        log_row["created_at"] = self.db_time(log_row["created_at"])
        usage["day"] = usage["day"].isoformat()
        if not self.sqlite:
            _fit(log_row, _LIMITS["log"])
            _fit(usage, _LIMITS["usage"])
            for attempt in attempts:
                _fit(attempt, _LIMITS["attempt"])
        if success is not None:
            success = (success[0], self.db_time(success[1]))
        return {"log": log_row, "attempts": attempts, "usage": usage, "success": success}

    # -- the request's side -----------------------------------------------------------

    def write(
        self, log_row: dict, attempts: list[dict], usage: dict, success, strict: bool = False
    ) -> None:
        """Journal one request's rows and queue them for the database; returns at once.
        With `strict`, a line the journal cannot take raises JournalFull and nothing is
        queued (the caller answers 503 instead of an answer that could be lost)."""
        day = usage["day"]
        entry = self.entry(log_row, attempts, usage, success)
        line = journal.encode(entry)
        answer = 200 <= log_row["status_code"] < 300
        with self._lock:
            self._start_if_needed()
            segment = self._segment
            try:
                if segment is None:
                    raise OSError(f"no journal segment could be opened in {self.journal_dir}")
                if not answer and segment.room - len(line) < self.headroom:
                    raise journal.JournalFull("the room left is kept for answers")
                segment.append(line)
            except OSError as exc:
                if strict:
                    raise journal.JournalFull(str(exc)) from exc
                log.warning("journal write failed (%s); request %s is queued only in memory",
                            exc, log_row["request_id"])  # fmt: skip
                segment = None
            self._queue.append((entry, segment))
            self._written += 1
            if usage["provider_key_id"]:
                self._unapplied[(usage["provider_key_id"], day)] += usage["total_tokens"]
            if segment is not None and segment.size > journal.ROTATE_BYTES:
                self._rotate()
        self._wake()

    def has_room(self) -> bool:
        """Whether the journal can take the answers of requests admitted now: room kept
        ahead, or space the disk still gives. False while the disk is full and the
        database has not taken the lines that fill it."""
        with self._lock:
            self._start_if_needed()
            segment = self._segment
            if segment is None:
                return self._open_segment()
            return segment.room >= self.headroom or (
                segment.allocate() and segment.room >= self.headroom
            )

    def _rotate(self) -> None:
        """Start a fresh segment; the full one goes once all its lines are committed."""
        try:
            fresh = journal.Segment(self.journal_dir, self._database_id, self.reserve)
        except OSError:
            log.exception("cannot open a new journal segment; appending to the old one")
            return
        self._retired.append(self._segment)
        self._segment = fresh

    def unapplied_tokens(self, key_id: int, day: date) -> int:
        """Tokens this process booked for the key and day that are not committed yet."""
        return self._unapplied.get((key_id, day), 0)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything written so far is in the database; False on timeout."""
        with self._lock:
            target = self._written
        deadline = time.monotonic() + timeout
        while self._done < target:
            if time.monotonic() > deadline:
                return False
            self._wake()
            _release(self._hurry)
            time.sleep(0.001)  # cooperative under gevent
        return True

    def settle(self, timeout: float = 2.0) -> bool:
        """Wait until what every process booked so far is in the database, as far as can
        be told: this process's queue committed, dead processes' journals replayed, and
        the live siblings' journals emptied by their writers (each commits within
        BATCH_WINDOW_SECONDS). For readers that sum usage across processes, such as the
        scheduled jobs. False when a sibling still had lines pending at the timeout
        (under steady load a busy writer's journal is rarely empty)."""
        deadline = time.monotonic() + timeout
        if not self.flush(timeout):
            return False
        self.recover()
        while journal.live_segments(self.journal_dir, self.database):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued and stop the writer."""
        self.flush(timeout)
        self._stopping = True
        self._wake()

    def _start_if_needed(self) -> None:
        """Open a segment and start the writer in this process (after a fork, anew)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        if not self._open_segment():  # the request still gets booked, without the guarantee
            log.error("cannot open a booking journal in %s", self.journal_dir)
        self._stopping = False
        _start_thread(self._run, ())

    def _open_segment(self) -> bool:
        """Open this process's segment (again, after the disk refused it)."""
        try:
            self.journal_dir.mkdir(parents=True, exist_ok=True)
            self._segment = journal.Segment(self.journal_dir, self._database_id, self.reserve)
        except OSError:
            self._segment = None
            return False
        return True

    def _wake(self) -> None:
        _release(self._signal)

    # -- the writer's side ------------------------------------------------------------

    def _run(self) -> None:
        conn = None
        last_recovery = time.monotonic()
        while not (self._stopping and not self._queue):
            if self._signal.acquire(timeout=min(1.0, self.recover_every)):
                # Let bookings gather: one commit (and one GIL hand-over) for all of them.
                self._hurry.acquire(timeout=self.batch_window)
            with self._lock:
                batch, self._queue = self._queue, []
            try:
                conn = conn or self.connect()
                if batch:
                    self._apply(conn, batch)
                    batch = []
                if time.monotonic() - last_recovery >= self.recover_every:
                    last_recovery = time.monotonic()
                    self._recover(conn)
            except Exception:  # noqa: BLE001 - the writer must outlive any one failure
                log.exception("the request-log writer failed; retrying")
                if conn is not None:
                    _close_quietly(conn)
                    conn = None
                with self._lock:  # what was not committed goes first next time
                    self._queue[:0] = batch
                _os_sleep(RETRY_SECONDS[-1])
        if conn is not None:
            _close_quietly(conn)

    def connect(self):
        """A DB-API connection of the writer's own, outside SQLAlchemy's pool."""
        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        conn = self.engine.dialect.connect(*cargs, **cparams)
        if self.sqlite:
            from gateway.store import configure_sqlite

            configure_sqlite(conn)
        return conn

    def _apply(self, conn, batch: list[tuple[dict, journal.Segment | None]]) -> None:
        """Commit a batch; transient errors (a locked database) retry, bad rows fail alone."""
        entries = [entry for entry, _ in batch]
        for delay in (*RETRY_SECONDS, None):
            try:
                self._commit(conn, entries)
                break
            except self.dbapi.Error as exc:
                _rollback_quietly(conn)
                if not self._transient(exc):
                    self._commit_one_by_one(conn, entries)
                    break
                if delay is None:
                    raise
                log.warning("request log commit failed (%s); retrying in %.2fs", exc, delay)
                _os_sleep(delay)
        with self._lock:
            for entry, segment in batch:
                usage = entry["usage"]
                if usage["provider_key_id"]:
                    slot = (usage["provider_key_id"], date.fromisoformat(usage["day"]))
                    self._unapplied[slot] -= usage["total_tokens"]
                    if not self._unapplied[slot]:
                        del self._unapplied[slot]
                if segment is not None:
                    segment.pending -= 1
            self._tidy_segments()
            self._done += len(batch)  # last: flush() returns on it

    def _transient(self, exc: Exception) -> bool:
        """Whether a failed commit may succeed later (a lock, a full disk, a database that
        went away): the rows wait in the journal, never dropped for it."""
        return isinstance(exc, self.dbapi.OperationalError) or database_down(exc)

    def _commit_one_by_one(self, conn, entries: list[dict]) -> None:
        for entry in entries:
            try:
                self._commit(conn, [entry])
            except self.dbapi.Error as exc:
                _rollback_quietly(conn)
                if self._transient(exc):
                    raise
                log.exception("request %s could not be logged; dropped", entry["log"]["request_id"])

    def _tidy_segments(self) -> None:
        """Delete retired segments that are fully committed; empty the current one when idle."""
        for segment in [s for s in self._retired if s.pending == 0]:
            self._retired.remove(segment)
            segment.discard()
        current = self._segment
        if current is not None and current.pending == 0 and current.size:
            current.empty()

    def _commit(self, conn, entries: list[dict]) -> None:
        usage: dict[tuple, dict] = {}
        used_at: dict[int, datetime] = {}
        charges: dict[int, int] = defaultdict(int)  # client key → cost (members' balances)
        for entry in entries:
            if entry["log"].get("client_key_id") and entry["log"].get("cost_micros"):
                charges[entry["log"]["client_key_id"]] += entry["log"]["cost_micros"]
            if entry["usage"]["profile_id"] is None:
                continue  # a request for a profile that does not exist: logged, not rolled up
            key = tuple(entry["usage"][c] for c in _USAGE_KEY)
            total = usage.setdefault(key, dict.fromkeys(USAGE_COUNTERS, 0))
            for counter in USAGE_COUNTERS:
                total[counter] += entry["usage"][counter]
            if entry["success"] is not None:
                key_id, now = entry["success"]
                used_at[key_id] = max(now, used_at.get(key_id, now))
        cursor = conn.cursor()
        try:
            log_ids = self._insert_logs(cursor, entries)
            attempts = [
                {**attempt, "request_log_id": log_ids[entry["log"]["request_id"]]}
                for entry in entries
                for attempt in entry["attempts"]
            ]
            if attempts:
                cursor.executemany(self._sql["attempt"], attempts)
            rows = [
                {**dict(zip(_USAGE_KEY, key, strict=True)), **counts}
                for key, counts in usage.items()
            ]
            if rows:
                cursor.executemany(self._sql["usage"], rows)
            if used_at:
                touched = [{"key_id": k, "now": t} for k, t in used_at.items()]
                cursor.executemany(self._sql["ended"], touched)
                cursor.executemany(self._sql["success"], touched)
            if charges:
                cursor.executemany(
                    self._sql["member"],
                    [{"cost": c, "client_key_id": k} for k, c in sorted(charges.items())],
                )
            conn.commit()
            self.commits += 1
        finally:
            cursor.close()

    def _insert_logs(self, cursor, entries: list[dict]) -> dict[str, int]:
        """Insert the log rows, many per statement; request id → row id.

        One statement per power-of-two run of rows (so at most a dozen statement shapes
        for the driver's cache): a batch costs a few calls into SQLite, not one per row.
        """
        ids: dict[str, int] = {}
        start = 0
        while start < len(entries):
            size = min(MAX_ROWS_PER_INSERT, 1 << ((len(entries) - start).bit_length() - 1))
            chunk = entries[start : start + size]
            # .get: a journal line of an older version lacks the newer columns
            params = [entry["log"].get(column) for entry in chunk for column in _LOG_COLUMNS]
            cursor.execute(self._multi_insert(size), params)
            ids.update((request_id, row_id) for row_id, request_id in cursor.fetchall())
            start += size
        if len(ids) != len(entries):  # the same request id twice within one batch
            raise self.dbapi.IntegrityError("UNIQUE constraint failed: request_logs.request_id")
        return ids

    def _multi_insert(self, rows: int) -> str:
        sql = self._multi.get(rows)
        if sql is None:
            mark = "?" if self.sqlite else "%s"
            values = "(" + ", ".join([mark] * len(_LOG_COLUMNS)) + ")"
            sql = (
                f"INSERT INTO request_logs ({', '.join(_LOG_COLUMNS)}) "
                f"VALUES {', '.join([values] * rows)} RETURNING id, request_id"
            )
            self._multi[rows] = sql
        return sql

    # -- recovery ---------------------------------------------------------------------

    def recover(self) -> int:
        """Replay the journals of dead processes; returns how many requests were added."""
        conn = self.connect()
        try:
            return self._recover(conn)
        finally:
            _close_quietly(conn)

    def _recover(self, conn) -> int:
        added = 0
        for path, entries in journal.orphans(self.journal_dir, self.database):
            fresh = self._not_logged(conn, entries)
            if fresh:
                log.warning("replaying %d request(s) from %s", len(fresh), path.name)
                self._replay(conn, fresh)
            added += len(fresh)
        self.replayed += added
        return added

    def _replay(self, conn, entries: list[dict]) -> None:
        try:
            self._commit(conn, entries)
        except self.dbapi.Error as exc:
            _rollback_quietly(conn)
            if self._transient(exc):
                raise
            self._commit_one_by_one(conn, entries)

    def _not_logged(self, conn, entries: list[dict]) -> list[dict]:
        """The entries whose request id is not in the log yet."""
        placeholder = "?" if self.sqlite else "%s"
        seen: set[str] = set()
        ids = [entry["log"]["request_id"] for entry in entries]
        cursor = conn.cursor()
        try:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join([placeholder] * len(chunk))
                cursor.execute(
                    f"SELECT request_id FROM request_logs WHERE request_id IN ({marks})", chunk
                )
                seen.update(row[0] for row in cursor.fetchall())
        finally:
            cursor.close()
        conn.rollback()  # end the read transaction
        fresh, queued = [], set()
        for entry in entries:
            request_id = entry["log"]["request_id"]
            if request_id not in seen and request_id not in queued:
                queued.add(request_id)
                fresh.append(entry)
        return fresh


def _release(lock) -> None:
    """Release a signalling lock if it is held (several threads may try at once)."""
    if lock.locked():
        try:  # noqa: SIM105 - cheaper than contextlib.suppress on every request
            lock.release()
        except RuntimeError:  # released by another thread first
            pass


def _rollback_quietly(conn) -> None:
    try:
        conn.rollback()
    except Exception:  # noqa: BLE001 - the connection is broken; it is replaced
        log.debug("rolling back on the writer's connection failed", exc_info=True)


def _close_quietly(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - closing a broken connection
        log.debug("closing the writer's connection failed", exc_info=True)
