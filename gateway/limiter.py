"""Rate limits shared by every worker on this host (F30, F31, F7).

gunicorn runs several worker processes; a limit kept in one process's memory would let
each of them admit the full rate. The counters live in a file under the instance folder,
mapped into every worker's memory and guarded by `flock`, so an admission is one locked
read-modify-write of a few hundred bytes (a few microseconds), with no database write on
the request path.

A *scope* (`ck:7` for client key 7, `pk:3` for provider key 3, …) owns one slot:

- a sliding 60-second window of 60 one-second buckets, each holding the second it counts,
  the requests admitted in it and the tokens booked in it;
- requests in flight per worker process (pid), so a worker killed mid-request does not
  hold its slots for ever: when a scope looks full, counts of dead pids are dropped first.

Windows use the gateway clock's epoch seconds, so tests move time instead of sleeping.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

WINDOW = 60
SLOTS = 4096
IN_FLIGHT_ENTRIES = 4096

_DIGEST = 16
_SLOT = struct.Struct(f"<{_DIGEST}s{WINDOW}q{WINDOW}I{WINDOW}Q")  # key, seconds, requests, tokens
_SLOT_SIZE = _SLOT.size
_FLIGHT = struct.Struct(f"<{_DIGEST}siiq")  # scope key, pid, count, reserved micro-dollars
_BUDGET = struct.Struct(f"<{_DIGEST}sqq")  # scope key, period id, spent micro-dollars
_SECONDS_AT = _DIGEST
_REQUESTS_AT = _DIGEST + 8 * WINDOW
_TOKENS_AT = _REQUESTS_AT + 4 * WINDOW
_MAGIC = b"KRLIMIT2"
_HEADER = 64
_FLIGHTS_AT = _HEADER + SLOTS * _SLOT_SIZE
_BUDGETS_AT = _FLIGHTS_AT + IN_FLIGHT_ENTRIES * _FLIGHT.size
BUDGET_ENTRIES = 4096
_SIZE = _BUDGETS_AT + BUDGET_ENTRIES * _BUDGET.size
_EMPTY = bytes(_DIGEST)


@dataclass(frozen=True)
class Limits:
    """The limits of one scope; None means unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    parallel: int | None = None

    def any(self) -> bool:
        return self.rpm is not None or self.tpm is not None or self.parallel is not None


@dataclass
class Window:
    """A scope's state at one moment: what the x-ratelimit-* headers report."""

    requests: int
    tokens: int
    in_flight: int
    # Seconds until the oldest request / token bucket in the window ages out.
    requests_reset: int
    tokens_reset: int


@dataclass
class Refusal:
    """Why a request was not admitted, and when to try again."""

    reason: str  # "rpm", "tpm" or "parallel"
    retry_after: int
    window: Window


def _key(scope: str) -> bytes:
    return hashlib.blake2b(scope.encode(), digest_size=_DIGEST).digest()


class SharedLimiter:
    """Sliding-window and in-flight counters in a shared, memory-mapped file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pid = None
        self._map: mmap.mmap | None = None
        self._fd = -1
        self._slots: dict[bytes, int] = {}

    # -- file -------------------------------------------------------------------------

    def _open(self) -> mmap.mmap:
        """Map the file (again after a fork: each process needs its own descriptor)."""
        if self._map is not None and self._pid == os.getpid():
            return self._map
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_size != _SIZE or os.pread(fd, 8, 0) != _MAGIC:
                os.ftruncate(fd, 0)  # a file of another layout: start from zero
                os.ftruncate(fd, _SIZE)
                os.pwrite(fd, _MAGIC, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self._fd, self._pid, self._slots = fd, os.getpid(), {}
        self._map = mmap.mmap(fd, _SIZE)
        return self._map

    def _slot(self, buf: mmap.mmap, key: bytes) -> int | None:
        """The slot offset of the key (claimed if new); None when the table is full."""
        cached = self._slots.get(key)
        if cached is not None:
            return cached
        start = int.from_bytes(key[:4], "little") % SLOTS
        for probe in range(SLOTS):
            offset = _HEADER + ((start + probe) % SLOTS) * _SLOT_SIZE
            current = buf[offset : offset + _DIGEST]
            if current == key:
                self._slots[key] = offset
                return offset
            if current == _EMPTY:
                buf[offset : offset + _DIGEST] = key
                self._slots[key] = offset
                return offset
        return None

    class _Locked:
        def __init__(self, limiter: SharedLimiter) -> None:
            self.limiter = limiter

        def __enter__(self) -> mmap.mmap:
            buf = self.limiter._open()
            fcntl.flock(self.limiter._fd, fcntl.LOCK_EX)
            return buf

        def __exit__(self, *exc) -> None:
            fcntl.flock(self.limiter._fd, fcntl.LOCK_UN)

    def _locked(self) -> SharedLimiter._Locked:
        return SharedLimiter._Locked(self)

    # -- window -----------------------------------------------------------------------

    @staticmethod
    def _read(buf, offset: int, now: int) -> tuple[tuple, tuple, tuple]:
        seconds = struct.unpack_from(f"<{WINDOW}q", buf, offset + _SECONDS_AT)
        requests = struct.unpack_from(f"<{WINDOW}I", buf, offset + _REQUESTS_AT)
        tokens = struct.unpack_from(f"<{WINDOW}Q", buf, offset + _TOKENS_AT)
        return seconds, requests, tokens

    @staticmethod
    def _bucket(buf, offset: int, now: int) -> int:
        """The index of this second's bucket, emptied first if it held an older second."""
        index = now % WINDOW
        at = offset + _SECONDS_AT + 8 * index
        if struct.unpack_from("<q", buf, at)[0] != now:
            struct.pack_into("<q", buf, at, now)
            struct.pack_into("<I", buf, offset + _REQUESTS_AT + 4 * index, 0)
            struct.pack_into("<Q", buf, offset + _TOKENS_AT + 8 * index, 0)
        return index

    @staticmethod
    def _window(seconds, requests, tokens, now: int, in_flight: int) -> Window:
        live = [i for i in range(WINDOW) if 0 <= now - seconds[i] < WINDOW]
        req = sum(requests[i] for i in live)
        tok = sum(tokens[i] for i in live)
        oldest_req = min((seconds[i] for i in live if requests[i]), default=None)
        oldest_tok = min((seconds[i] for i in live if tokens[i]), default=None)
        return Window(
            requests=req,
            tokens=tok,
            in_flight=in_flight,
            requests_reset=0 if oldest_req is None else oldest_req + WINDOW - now,
            tokens_reset=0 if oldest_tok is None else oldest_tok + WINDOW - now,
        )

    @staticmethod
    def _retry_after(seconds, counts, now: int, limit: int) -> int:
        """Seconds until enough of the window ages out for one more (at least 1)."""
        live = sorted(
            (seconds[i], counts[i]) for i in range(WINDOW) if 0 <= now - seconds[i] < WINDOW
        )
        total = sum(count for _, count in live)
        for second, count in live:
            total -= count
            if total < limit:
                return max(1, second + WINDOW - now)
        return 1

    # -- in flight --------------------------------------------------------------------

    def _flights(self, buf, key: bytes) -> list[tuple[int, int, int, int]]:
        """(offset, pid, count, reserved) of the scope's entries, one per process."""
        found = []
        for i in range(IN_FLIGHT_ENTRIES):
            offset = _FLIGHTS_AT + i * _FLIGHT.size
            entry_key, pid, count, reserved = _FLIGHT.unpack_from(buf, offset)
            if entry_key == key:
                found.append((offset, pid, count, reserved))
            elif entry_key == _EMPTY:
                break
        return found

    def _add_flight(self, buf, key: bytes, delta: int, reserve: int = 0) -> None:
        """Change this process's in-flight count and reserved amount for the scope."""
        pid = os.getpid()
        free = None
        for i in range(IN_FLIGHT_ENTRIES):
            offset = _FLIGHTS_AT + i * _FLIGHT.size
            entry_key, entry_pid, count, reserved = _FLIGHT.unpack_from(buf, offset)
            if entry_key == key and entry_pid == pid:
                _FLIGHT.pack_into(
                    buf, offset, key, pid, max(0, count + delta), max(0, reserved + reserve)
                )
                return
            if entry_key == _EMPTY:
                free = offset
                break
        if free is None and (delta > 0 or reserve > 0):
            free = self._reusable_flight(buf)
        if free is not None and (delta > 0 or reserve > 0):
            _FLIGHT.pack_into(buf, free, key, pid, max(0, delta), max(0, reserve))

    def _reusable_flight(self, buf) -> int | None:
        """An entry holding nothing for a process that is gone (workers restart with new
        pids, so without reuse the table would fill up over months)."""
        for i in range(IN_FLIGHT_ENTRIES):
            offset = _FLIGHTS_AT + i * _FLIGHT.size
            _, pid, count, reserved = _FLIGHT.unpack_from(buf, offset)
            if not count and not reserved and not self._alive(pid):
                return offset
        return None

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _in_flight(self, buf, key: bytes, purge: bool, field: int = 2) -> int:
        """Requests in flight (field 2) or micro-dollars reserved (field 3) for the scope;
        `purge` first drops what processes that no longer exist were holding."""
        total = 0
        for entry in self._flights(buf, key):
            offset, pid = entry[0], entry[1]
            if purge and (entry[2] or entry[3]) and not self._alive(pid):
                _FLIGHT.pack_into(buf, offset, key, pid, 0, 0)
                continue
            total += entry[field]
        return total

    # -- the operations ---------------------------------------------------------------

    def admit(self, scope: str, limits: Limits, now: int) -> tuple[Window, Refusal | None]:
        """Count one request against the scope if its limits allow it (atomically)."""
        key = _key(scope)
        with self._locked() as buf:
            offset = self._slot(buf, key)
            if offset is None:
                return Window(0, 0, 0, 0, 0), None  # table full: never block traffic
            seconds, requests, tokens = self._read(buf, offset, now)
            flying = self._in_flight(buf, key, purge=False) if limits.parallel else 0
            if limits.parallel is not None and flying >= limits.parallel:
                flying = self._in_flight(buf, key, purge=True)
            window = self._window(seconds, requests, tokens, now, flying)
            refusal = None
            if limits.parallel is not None and flying >= limits.parallel:
                refusal = Refusal("parallel", 1, window)
            elif limits.rpm is not None and window.requests >= limits.rpm:
                retry = self._retry_after(seconds, requests, now, limits.rpm)
                refusal = Refusal("rpm", retry, window)
            elif limits.tpm is not None and window.tokens >= limits.tpm:
                retry = self._retry_after(seconds, tokens, now, limits.tpm)
                refusal = Refusal("tpm", retry, window)
            if refusal is not None:
                return window, refusal
            index = self._bucket(buf, offset, now)
            at = offset + _REQUESTS_AT + 4 * index
            struct.pack_into("<I", buf, at, struct.unpack_from("<I", buf, at)[0] + 1)
            if limits.parallel is not None:
                self._add_flight(buf, key, +1)
            window.requests += 1
            window.in_flight = flying + (1 if limits.parallel is not None else 0)
            if window.requests_reset == 0:
                window.requests_reset = WINDOW
            return window, None

    def settle(self, scope: str, tokens: int, now: int, parallel: bool) -> None:
        """Book the request's tokens in this second and end its in-flight count."""
        key = _key(scope)
        with self._locked() as buf:
            offset = self._slot(buf, key)
            if offset is None:
                return
            if tokens:
                index = self._bucket(buf, offset, now)
                at = offset + _TOKENS_AT + 8 * index
                struct.pack_into("<Q", buf, at, struct.unpack_from("<Q", buf, at)[0] + tokens)
            if parallel:
                self._add_flight(buf, key, -1)

    def window(self, scope: str, now: int) -> Window:
        """The scope's window now, without counting anything."""
        key = _key(scope)
        with self._locked() as buf:
            offset = self._slot(buf, key)
            if offset is None:
                return Window(0, 0, 0, 0, 0)
            seconds, requests, tokens = self._read(buf, offset, now)
            return self._window(seconds, requests, tokens, now, self._in_flight(buf, key, False))

    # -- budgets ----------------------------------------------------------------------

    def _budget_entry(self, buf, key: bytes) -> int | None:
        for i in range(BUDGET_ENTRIES):
            offset = _BUDGETS_AT + i * _BUDGET.size
            current = buf[offset : offset + _DIGEST]
            if current == key:
                return offset
            if current == _EMPTY:
                _BUDGET.pack_into(buf, offset, key, -1, 0)
                return offset
        return None

    def reserve(
        self, scope: str, period: int, budget: int, estimate: int, load_spent
    ) -> tuple[int, int, bool]:
        """Reserve `estimate` micro-dollars of the scope's budget for one request.

        `period` identifies the budget period; the first use of a period takes the spend so
        far from `load_spent()` (the database), once for all workers. Returns (spent,
        reserved by others, admitted).
        """
        key = _key(scope)
        with self._locked() as buf:
            offset = self._budget_entry(buf, key)
            if offset is None:
                return 0, 0, True  # table full: never block traffic
            _, known, spent = _BUDGET.unpack_from(buf, offset)
            if known != period:
                spent = int(load_spent())
                _BUDGET.pack_into(buf, offset, key, period, spent)
            reserved = self._in_flight(buf, key, purge=False, field=3)
            if spent + reserved + estimate > budget:
                reserved = self._in_flight(buf, key, purge=True, field=3)
            if spent + reserved + estimate > budget:
                return spent, reserved, False
            self._add_flight(buf, key, 0, estimate)
            return spent, reserved, True

    def settle_budget(self, scope: str, period: int, estimate: int, cost: int) -> None:
        """Give back the reservation and add the request's real cost to its period."""
        key = _key(scope)
        with self._locked() as buf:
            self._add_flight(buf, key, 0, -estimate)
            offset = self._budget_entry(buf, key)
            if offset is None:
                return
            _, known, spent = _BUDGET.unpack_from(buf, offset)
            if known == period:
                _BUDGET.pack_into(buf, offset, key, period, spent + cost)

    def spent(self, scope: str, period: int) -> int | None:
        """The scope's spend in the period, if this host has counted it."""
        key = _key(scope)
        with self._locked() as buf:
            offset = self._budget_entry(buf, key)
            if offset is None:
                return None
            _, known, spent = _BUDGET.unpack_from(buf, offset)
            return spent if known == period else None
