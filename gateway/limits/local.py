"""Rate limits shared by every worker on this host (F30, F31, F7).

gunicorn runs several worker processes; a limit kept in one process's memory would let
each of them admit the full rate. The counters live in a file under the instance folder,
mapped into every worker's memory and guarded by `flock`, so an admission is one locked
read-modify-write of a few hundred bytes (a few microseconds), with no database write on
the request path.

A *scope* (`ck:7` for client key 7, `pk:3` for provider key 3, `pk:3:gpt-4o`, …) owns:

- a window slot: a sliding 60-second window of 60 one-second buckets (requests, tokens)
  and the last second it was moved to (`head`); buckets hold only the seconds
  (head-60, head], older ones are emptied as the window moves;
- requests in flight and micro-dollars reserved, per worker process (pid), in the
  in-flight table, so a worker killed mid-request does not hold its places for ever: when
  a scope looks full, what dead pids held is dropped first;
- for budget scopes, the spend of the current period (reloaded from the database through
  `load_spent()` whenever this file does not know it).

The file never fails open. Each table is open addressing with a bounded neighbourhood of
`PROBE` entries; a key is stored under a 16-byte hash (8 bytes of its owner `ck:7`/`pk:3`,
8 of the full scope, so `forget("ck:7")` finds all of a key's scopes). A new scope whose
neighbourhood is full takes, in order: an entry that fails its checksum, the oldest idle
entry (a window older than 60 s / a budget with nothing reserved), else the least
recently used one. In-flight entries are never evicted while their pid lives: a full
neighbourhood refuses the request instead. Every entry carries a CRC-32 of its key and
contents, the header a magic, version, sizes, CRC and the id of the database the file
belongs to; anything that does not check out is reset rather than trusted. The file is
rebuilt (windows start empty, spend is reloaded from the database) when its header is
wrong, it belongs to another database, it was truncated, or it was deleted or replaced
(each operation compares the inode of the path with its own under the lock, and checks
the size before it touches the map: a file truncated behind its back is grown again, not
read past its end).

Sizes: 262,144 window slots of 388 bytes, 65,536 in-flight entries, 262,144 budget
entries: a sparse file of ~113 MB of which only the pages of scopes in use are ever
touched (~2 MB for a few hundred keys, ~100 MB with 100,000 keys busy at once).

Windows use the gateway clock's epoch seconds, so tests move time instead of sleeping.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway import process

log = logging.getLogger(__name__)

WINDOW = 60
SLOTS = 1 << 18  # window slots: 100,000 scopes fill it to 38 %
IN_FLIGHT_ENTRIES = 1 << 16  # (scope, pid) pairs with requests in flight or money reserved
BUDGET_ENTRIES = 1 << 18
PROBE = 32  # the neighbourhood a key may live in: its home entry and the next PROBE-1

_KEY = 16  # 8 bytes of the owner's hash, 8 of the scope's
_EMPTY = bytes(_KEY)
_U32 = 0xFFFFFFFF
_PAGE = 4096
_HEADER = _PAGE  # the header's page; the tables follow
_MAGIC = b"KRLIMIT3"
_VERSION = 3
# magic, version, crc of what follows, slots, flights, budgets, probe, database digest, id
_HEAD = struct.Struct("<8sII4I16s64s")
_HEAD_CRC_FROM = 16
# A window slot body (its key is in the slot index): crc, head second (u32), requests and
# tokens in the window and the oldest second holding requests / tokens (kept up to date so
# that an admission reads them instead of adding up 60 buckets), then requests per second
# (u16, saturating) and tokens per second (u32, saturating): 388 bytes.
_BH = struct.Struct("<IIIQII")
_B_HEAD = 4
_B_REQ = _BH.size
_B_TOK = _B_REQ + 2 * WINDOW
_BODY_SIZE = _B_TOK + 4 * WINDOW
_REQS = struct.Struct(f"<{WINDOW}H")
_TOKS = struct.Struct(f"<{WINDOW}I")
_FLIGHT = struct.Struct("<IiIq")  # crc, pid, requests in flight, micro-dollars reserved
_BUDGET = struct.Struct("<IIqq")  # crc, last used (epoch s), period id, spent micro-dollars
_NO_PERIOD = -(2**63)
_U32S = struct.Struct("<I")
_U16S = struct.Struct("<H")


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


def _owner(scope: str) -> str:
    """The key a scope belongs to: its first two parts (`ck:7` of `ck:7:budget`)."""
    return ":".join(scope.split(":", 2)[:2])


def _hash8(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def _key(scope: str) -> bytes:
    return _hash8(_owner(scope)) + _hash8(scope)


def _aligned(region: bytes, needle: bytes) -> list[int]:
    """The entry numbers in an index region whose key is `needle`."""
    found = []
    pos = region.find(needle)
    while pos >= 0:
        if pos % _KEY:
            pos = region.find(needle, pos + 1)
        else:
            found.append(pos // _KEY)
            pos = region.find(needle, pos + _KEY)
    return found


def _first_aligned(region: bytes, needle: bytes) -> int | None:
    pos = region.find(needle)
    while pos >= 0 and pos % _KEY:
        pos = region.find(needle, pos + 1)
    return None if pos < 0 else pos // _KEY


def _age(now: int, second: int) -> int:
    """now - second on the u32 circle (negative: `second` is ahead of now)."""
    age = (now - second) & _U32
    return age - (1 << 32) if age >= 1 << 31 else age


def _zero_ring(body: bytearray, start: int, count: int) -> None:
    """Empty `count` buckets (requests and tokens) from ring index `start` on."""
    if count >= WINDOW:
        body[_B_REQ:] = bytes(_BODY_SIZE - _B_REQ)
        return
    end = start + count
    for base, width in ((_B_REQ, 2), (_B_TOK, 4)):
        if end <= WINDOW:
            body[base + width * start : base + width * end] = bytes(width * count)
        else:
            body[base + width * start : base + width * WINDOW] = bytes(width * (WINDOW - start))
            body[base : base + width * (end - WINDOW)] = bytes(width * (end - WINDOW))


def _oldest(view: bytearray, base: int, width: int, now: int) -> int:
    """The ring position (0: second now-59) of the oldest non-empty bucket (-1: none)."""
    value = int.from_bytes(view[base : base + width * WINDOW], "little")
    if not value:
        return -1
    bits, start = 8 * width, (now + 1) % WINDOW
    high = value >> (bits * start)
    if high:
        return ((high & -high).bit_length() - 1) // bits
    return WINDOW - start + ((value & -value).bit_length() - 1) // bits


def _recount(view: bytearray, now: int) -> tuple[int, int, int, int]:
    """(requests, tokens, oldest second with requests, with tokens) of the buckets."""
    requests = sum(_REQS.unpack_from(view, _B_REQ))
    tokens = sum(_TOKS.unpack_from(view, _B_TOK))
    oldest_req, oldest_tok = _oldest(view, _B_REQ, 2, now), _oldest(view, _B_TOK, 4, now)
    return (
        requests,
        tokens,
        (now - WINDOW + 1 + oldest_req) & _U32 if oldest_req >= 0 else 0,
        (now - WINDOW + 1 + oldest_tok) & _U32 if oldest_tok >= 0 else 0,
    )


def _advance(body: bytearray, now: int) -> None:
    """Move the window to `now`: buckets of seconds before now-59 are emptied. (A `now`
    a little behind the head, another worker's clock read a moment earlier, moves
    nothing; one more than a window behind starts the window afresh.)"""
    age = _age(now, _U32S.unpack_from(body, _B_HEAD)[0])
    if age == 0 or -WINDOW < age < 0:
        return
    if 0 < age < WINDOW:
        _zero_ring(body, (_U32S.unpack_from(body, _B_HEAD)[0] + 1) % WINDOW, age)
        _BH.pack_into(body, 0, 0, now & _U32, *_recount(body, now))
    else:
        _zero_ring(body, 0, WINDOW)
        _BH.pack_into(body, 0, 0, now & _U32, 0, 0, 0, 0)


def _view(body: bytearray, now: int) -> bytearray:
    """The body as seen at `now` (after _advance): seconds after `now` left out."""
    ahead = -_age(now, _U32S.unpack_from(body, _B_HEAD)[0])
    if ahead <= 0:
        return body
    view = bytearray(body)
    _zero_ring(view, (now + 1) % WINDOW, ahead)
    _BH.pack_into(view, 0, 0, now & _U32, *_recount(view, now))
    return view


def _measure(body: bytearray, now: int, in_flight: int) -> Window:
    """The window at `now` (after _advance) from the body's totals."""
    _, head, requests, tokens, oldest_req, oldest_tok = _BH.unpack_from(body)
    if head != now & _U32:
        _, head, requests, tokens, oldest_req, oldest_tok = _BH.unpack_from(_view(body, now))
    return Window(
        requests=requests,
        tokens=tokens,
        in_flight=in_flight,
        requests_reset=WINDOW - _age(now, oldest_req) if requests else 0,
        tokens_reset=WINDOW - _age(now, oldest_tok) if tokens else 0,
    )


def _bump(body: bytearray, now: int, tokens: int) -> None:
    """Count one request (tokens=0) or `tokens` tokens in the bucket of `now`."""
    _, head, requests, total, oldest_req, oldest_tok = _BH.unpack_from(body)
    if tokens:
        at = _B_TOK + 4 * (now % WINDOW)
        before = _U32S.unpack_from(body, at)[0]
        after = min(_U32, before + tokens)
        _U32S.pack_into(body, at, after)
        if not total or _age(oldest_tok, now) > 0:
            oldest_tok = now & _U32
        total += after - before
    else:
        at = _B_REQ + 2 * (now % WINDOW)
        before = _U16S.unpack_from(body, at)[0]
        if before == 0xFFFF:
            return
        _U16S.pack_into(body, at, before + 1)
        if not requests or _age(oldest_req, now) > 0:
            oldest_req = now & _U32
        requests += 1
    _BH.pack_into(body, 0, 0, head, requests, total, oldest_req, oldest_tok)


def _ring(view: bytearray, base: int, width: int, now: int) -> bytes:
    """The buckets' bytes, oldest second (now-59) first."""
    region = bytes(view[base : base + width * WINDOW])
    cut = width * ((now + 1) % WINDOW)
    return region[cut:] + region[:cut]


def _retry_after(view: bytearray, base: int, width: int, now: int, limit: int) -> int:
    """Seconds until enough of the window ages out for one more (at least 1)."""
    ring = _ring(view, base, width, now)
    counts = struct.unpack(f"<{WINDOW}{'H' if width == 2 else 'I'}", ring)
    total = sum(counts)
    for k, count in enumerate(counts):
        total -= count
        if total < limit:
            return max(1, k + 1)
    return 1


def granted(budget: int, estimate: int, spent: int, reserved: int) -> int:
    """What an admitted reservation holds: the estimate, or what the budget can still pay
    when that is less (computed alike by every limiter from the answer's spent and
    reserved)."""
    return max(0, min(estimate, budget - spent - reserved))


class SharedLimiter:
    """Sliding-window, in-flight and budget counters in a shared, memory-mapped file.

    `database_id` names the database the counters belong to; a file written for another
    one is rebuilt. The table sizes are class attributes (a test may subclass with small
    ones); a file of other sizes is rebuilt too.
    """

    slots = SLOTS
    flights = IN_FLIGHT_ENTRIES
    budgets = BUDGET_ENTRIES
    probe = PROBE

    def __init__(self, path: Path, database_id: str = "") -> None:
        self.path = Path(path)
        self._spath = os.fspath(self.path)
        self.database_id = database_id
        self._pid = None
        self._mutex, self._mutex_pid, self._depth = threading.RLock(), process.pid(), 0
        self._map: mmap.mmap | None = None
        self._fd = -1
        self._ident = (0, 0)
        self._keys: dict[str, bytes] = {}
        self._where: dict[bytes, int] = {}
        self._counts = dict.fromkeys(
            ("reclaimed", "evicted", "reset", "rebuilt", "reopened", "flights_reclaimed"), 0
        )
        text = database_id.encode()[:64].decode(errors="ignore").encode()
        digest = hashlib.blake2b(database_id.encode(), digest_size=16).digest()
        sizes = (self.slots, self.flights, self.budgets, self.probe)
        rest = _HEAD.pack(_MAGIC, _VERSION, 0, *sizes, digest, text)[_HEAD_CRC_FROM:]
        self._header = _HEAD.pack(_MAGIC, _VERSION, zlib.crc32(rest), *sizes, digest, text)
        # The layout: header page, then index (keys) and entries of each table, each
        # table page-aligned; an index holds probe-1 extra entries so that no
        # neighbourhood wraps around.
        n_slots, n_flights = self.slots + self.probe - 1, self.flights + self.probe - 1
        n_budgets = self.budgets + self.probe - 1
        self._index_bytes = (_KEY * n_slots, _KEY * n_flights, _KEY * n_budgets)
        at = _HEADER
        offsets = []
        for size in (
            _KEY * n_slots,
            _BODY_SIZE * n_slots,
            _KEY * n_flights,
            _FLIGHT.size * n_flights,
            _KEY * n_budgets,
            _BUDGET.size * n_budgets,
        ):
            offsets.append(at)
            at += -(-size // _PAGE) * _PAGE
        (
            self._slot_keys,
            self._slot_bodies,
            self._flight_keys,
            self._flight_entries,
            self._budget_keys,
            self._budget_entries,
        ) = offsets
        self._size = at
        self._lock = SharedLimiter._Locked(self)

    # -- file -------------------------------------------------------------------------

    def _diagnose(self, raw: bytes, size: int) -> str | None:
        """Why the file cannot be used as it is (None: it can)."""
        if size == self._size and raw == self._header:
            return None
        if size == 0:
            return "new"
        if size != self._size:
            return f"its size is {size} bytes, not {self._size}"
        magic, version, crc, *sizes, digest, text = _HEAD.unpack(raw)
        if magic != _MAGIC or version != _VERSION:
            return "it is not a limits file of this version"
        if zlib.crc32(raw[_HEAD_CRC_FROM:]) != crc:
            return "its header is corrupt"
        if tuple(sizes) != (self.slots, self.flights, self.budgets, self.probe):
            return "its tables have other sizes"
        if digest != self._header[-80:-64]:
            theirs = text.rstrip(b"\0").decode(errors="replace")
            return f"it belongs to database {theirs!r}, not {self.database_id!r}"
        return "its header is corrupt"

    def _rebuild(self, fd: int, reason: str) -> None:
        """Start the file afresh (under the lock): empty windows, no known spend."""
        if reason == "new":
            log.debug("limits file %s created", self.path)
        else:
            log.warning("limits file %s rebuilt: %s", self.path, reason)
            self._counts["rebuilt"] += 1
        os.ftruncate(fd, 0)  # drops every page: the tables read as empty
        os.ftruncate(fd, self._size)
        os.pwrite(fd, self._header, 0)
        self._where.clear()

    def _attach(self) -> None:
        """Open and map the file at the path (again after a fork, or once it was deleted,
        replaced or truncated behind our back), making or rebuilding it if needed."""
        self._detach()
        for attempt in range(100):
            try:
                fd = os.open(self._spath, os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:
                if attempt:
                    raise
                self.path.parent.mkdir(parents=True, exist_ok=True)  # the folder went too
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                st = os.fstat(fd)
                try:
                    now_at = os.stat(self._spath)
                except FileNotFoundError:
                    now_at = None
                if now_at is None or (now_at.st_dev, now_at.st_ino) != (st.st_dev, st.st_ino):
                    os.close(fd)  # replaced between open and lock: take the new one
                    continue
                reason = self._diagnose(os.pread(fd, _HEAD.size, 0), st.st_size)
                if reason is not None:
                    self._rebuild(fd, reason)
                self._map = mmap.mmap(fd, self._size)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BaseException:
                os.close(fd)
                raise
            self._fd, self._pid, self._ident = fd, process.pid(), (st.st_dev, st.st_ino)
            self._where.clear()
            return
        raise OSError(f"cannot open the limits file {self.path}: it keeps being replaced")

    def _detach(self) -> None:
        """Drop the map and descriptor (a forked child's are its parent's: closing them
        here leaves the parent's lock and map alone)."""
        if self._map is not None:
            self._map.close()
        if self._fd >= 0:
            os.close(self._fd)
        self._map, self._fd, self._pid = None, -1, None
        self._where.clear()

    def _acquire(self, pid: int) -> mmap.mmap:
        """Lock the file and check, under the lock, that the path still names our file,
        that it is whole and that its header is ours: one stat and a 112-byte compare."""
        for _ in range(100):
            if self._map is None or self._pid != pid:
                self._attach()
            fd = self._fd
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                try:
                    st = os.stat(self._spath)
                except FileNotFoundError:
                    st = None
                if st is None or (st.st_dev, st.st_ino) != self._ident:
                    log.warning("limits file %s was deleted or replaced: reopening", self.path)
                    self._counts["reopened"] += 1
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    self._detach()
                    continue
                buf = self._map
                if st.st_size != self._size:  # truncated: rebuild before touching the map
                    self._rebuild(fd, f"its size is {st.st_size} bytes, not {self._size}")
                elif buf[: _HEAD.size] != self._header:
                    self._rebuild(fd, self._diagnose(buf[: _HEAD.size], st.st_size) or "?")
                return buf
            except BaseException:
                if self._fd == fd:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                raise
        raise OSError(f"cannot keep hold of the limits file {self.path}")

    class _Locked:
        """flock keeps other processes out; a lock keeps this process's other threads
        out too (flock does not: they share the descriptor). Re-entrant: a nested use
        (load_spent calling back) neither locks nor unlocks the file again."""

        def __init__(self, limiter: SharedLimiter) -> None:
            self.limiter = limiter

        def __enter__(self) -> mmap.mmap:
            limiter = self.limiter
            pid = process.pid()
            if limiter._mutex_pid != pid:  # forked: the parent's lock state is moot
                limiter._mutex, limiter._mutex_pid, limiter._depth = threading.RLock(), pid, 0
            limiter._mutex.acquire()
            if limiter._depth:
                limiter._depth += 1
                return limiter._map
            try:
                buf = limiter._acquire(pid)
            except BaseException:
                limiter._mutex.release()
                raise
            limiter._depth = 1
            return buf

        def __exit__(self, *exc) -> None:
            limiter = self.limiter
            limiter._depth -= 1
            if not limiter._depth:
                fcntl.flock(limiter._fd, fcntl.LOCK_UN)
            limiter._mutex.release()

    def _locked(self) -> SharedLimiter._Locked:
        return self._lock

    def _key_of(self, scope: str) -> bytes:
        key = self._keys.get(scope)
        if key is None:
            if len(self._keys) > 100_000:
                self._keys.clear()
            key = self._keys[scope] = _key(scope)
        return key

    @staticmethod
    def _home(key: bytes, size: int) -> int:
        return int.from_bytes(key[8:], "little") % size

    # -- window slots -----------------------------------------------------------------

    def _body(self, buf, index: int, key: bytes) -> bytearray | None:
        """The slot's body if its checksum holds."""
        at = self._slot_bodies + index * _BODY_SIZE
        body = bytearray(buf[at : at + _BODY_SIZE])
        if _U32S.unpack_from(body)[0] != zlib.crc32(memoryview(body)[4:], zlib.crc32(key)):
            return None
        return body

    def _store(self, buf, index: int, key: bytes, body: bytearray) -> None:
        _U32S.pack_into(body, 0, zlib.crc32(memoryview(body)[4:], zlib.crc32(key)))
        at = self._slot_bodies + index * _BODY_SIZE
        buf[at : at + _BODY_SIZE] = body

    def _free_slot(self, buf, index: int) -> None:
        at = self._slot_keys + index * _KEY
        buf[at : at + _KEY] = _EMPTY
        self._counts["reset"] += 1

    def _slot(self, buf, key: bytes, now: int, claim: bool) -> tuple[int, bytearray] | None:
        """The scope's slot and body (a new one if it has none and `claim`)."""
        index = self._where.get(key)
        if (
            index is None
            or buf[self._slot_keys + index * _KEY : self._slot_keys + (index + 1) * _KEY] != key
        ):
            home = self._home(key, self.slots)
            at = self._slot_keys + home * _KEY
            found = _first_aligned(buf[at : at + self.probe * _KEY], key)
            index = None if found is None else home + found
        if index is not None:
            body = self._body(buf, index, key)
            if body is not None:
                if len(self._where) > 100_000:
                    self._where.clear()
                self._where[key] = index
                return index, body
            self._free_slot(buf, index)  # garbage: start the scope's window afresh
        if not claim:
            return None
        index = self._claim_slot(buf, key, now)
        body = bytearray(_BODY_SIZE)
        _U32S.pack_into(body, _B_HEAD, now & _U32)
        self._where[key] = index
        return index, body

    def _claim_slot(self, buf, key: bytes, now: int) -> int:
        """A slot for a new scope in its neighbourhood: an empty one, else one failing its
        checksum, else the oldest idle one (window older than 60 s), else the least
        recently used one. Never none."""
        home = self._home(key, self.slots)
        at = self._slot_keys + home * _KEY
        region = buf[at : at + self.probe * _KEY]
        free = _first_aligned(region, _EMPTY)
        if free is None:
            oldest, oldest_age = 0, None
            for j in range(self.probe):
                other = region[j * _KEY : (j + 1) * _KEY]
                body = self._body(buf, home + j, other)
                if body is None:
                    self._counts["reset"] += 1
                    free = j
                    break
                age = _age(now, _U32S.unpack_from(body, _B_HEAD)[0])
                if oldest_age is None or age > oldest_age:
                    oldest, oldest_age = j, age
            if free is None:
                free = oldest
                self._counts["reclaimed" if oldest_age >= WINDOW else "evicted"] += 1
        index = home + free
        buf[self._slot_keys + index * _KEY : self._slot_keys + (index + 1) * _KEY] = key
        return index

    # -- in flight --------------------------------------------------------------------

    def _flight_list(self, buf, key: bytes) -> list[tuple[int, int, int, int]]:
        """(index, pid, count, reserved) of the scope's entries, one per process; entries
        failing their checksum are dropped."""
        home = self._home(key, self.flights)
        at = self._flight_keys + home * _KEY
        found = []
        for j in _aligned(buf[at : at + self.probe * _KEY], key):
            index = home + j
            entry = self._flight(buf, index, key)
            if entry is None:
                self._drop_flight(buf, index)
                self._counts["reset"] += 1
            else:
                found.append((index, *entry))
        return found

    def _flight(self, buf, index: int, key: bytes) -> tuple[int, int, int] | None:
        at = self._flight_entries + index * _FLIGHT.size
        raw = buf[at : at + _FLIGHT.size]
        crc, pid, count, reserved = _FLIGHT.unpack(raw)
        if crc != zlib.crc32(raw[4:], zlib.crc32(key)) or reserved < 0:
            return None
        return pid, count, reserved

    def _put_flight(self, buf, index: int, key: bytes, pid: int, count: int, reserved: int):
        if not count and not reserved:
            self._drop_flight(buf, index)
            return
        raw = _FLIGHT.pack(0, pid, count, reserved)[4:]
        at = self._flight_entries + index * _FLIGHT.size
        buf[at : at + _FLIGHT.size] = _U32S.pack(zlib.crc32(raw, zlib.crc32(key))) + raw
        buf[self._flight_keys + index * _KEY : self._flight_keys + (index + 1) * _KEY] = key

    def _drop_flight(self, buf, index: int) -> None:
        buf[self._flight_keys + index * _KEY : self._flight_keys + (index + 1) * _KEY] = _EMPTY

    def _add_flight(self, buf, key: bytes, delta: int, reserve: int = 0, entries=None) -> bool:
        """Change this process's in-flight count and reserved amount for the scope; False
        when there is no room to record an increase (the caller must then refuse).
        `entries`: the scope's _flight_list, if the caller just read it."""
        pid = self._pid  # os.getpid(), checked by _acquire
        if entries is None:
            entries = self._flight_list(buf, key)
        for index, entry_pid, count, reserved in entries:
            if entry_pid == pid:
                count, reserved = max(0, count + delta), max(0, reserved + reserve)
                self._put_flight(buf, index, key, pid, count, reserved)
                return True
        if delta <= 0 and reserve <= 0:
            return True
        index = self._claim_flight(buf, key)
        if index is None:
            return False
        self._put_flight(buf, index, key, pid, max(0, delta), max(0, reserve))
        return True

    def _claim_flight(self, buf, key: bytes) -> int | None:
        """An entry in the scope's neighbourhood: empty, failing its checksum, holding
        nothing, or held by a process that is gone (workers restart with new pids). None
        when every entry there counts for a live process: never evict those."""
        home = self._home(key, self.flights)
        at = self._flight_keys + home * _KEY
        region = buf[at : at + self.probe * _KEY]
        free = _first_aligned(region, _EMPTY)
        if free is not None:
            return home + free
        for j in range(self.probe):
            entry = self._flight(buf, home + j, region[j * _KEY : (j + 1) * _KEY])
            if entry is None or not (entry[1] or entry[2]):
                self._counts["reset"] += entry is None
                return home + j
        for j in range(self.probe):
            entry = self._flight(buf, home + j, region[j * _KEY : (j + 1) * _KEY])
            if not self._alive(entry[0]):
                self._counts["flights_reclaimed"] += 1
                return home + j
        return None

    @staticmethod
    def _alive(pid: int) -> bool:
        if pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _in_flight(self, buf, key: bytes, purge: bool, field: int = 2, entries=None) -> int:
        """Requests in flight (field 2) or micro-dollars reserved (field 3) for the scope;
        `purge` first drops what processes that no longer exist were holding."""
        total = 0
        for entry in self._flight_list(buf, key) if entries is None else entries:
            if purge and (entry[2] or entry[3]) and not self._alive(entry[1]):
                self._drop_flight(buf, entry[0])
                self._counts["flights_reclaimed"] += 1
                continue
            total += entry[field]
        return total

    # -- the operations ---------------------------------------------------------------

    def later(self, operation: str, *args) -> Callable[[], tuple]:
        """`admit`, `reserve` or `reserve_and_admit`, whose answer is read by calling what
        this returns. The shared Redis limiter sends it and reads the answer then, so the
        round trip overlaps the caller's own work; a local file answers at once."""
        answer = getattr(self, operation)(*args)
        return lambda: answer

    def admit(self, scope: str, limits: Limits, now: int) -> tuple[Window, Refusal | None]:
        """Count one request against the scope if its limits allow it (atomically)."""
        key = self._keys.get(scope) or self._key_of(scope)
        with self._lock as buf:
            index, body = self._slot(buf, key, now, claim=True)
            _advance(body, now)
            flying, flights = 0, None
            if limits.parallel is not None:
                flights = self._flight_list(buf, key)
                flying = self._in_flight(buf, key, False, 2, flights)
                if flying >= limits.parallel:
                    flying, flights = self._in_flight(buf, key, purge=True), None
            window = _measure(body, now, flying)
            refusal = None
            if limits.parallel is not None and flying >= limits.parallel:
                refusal = Refusal("parallel", 1, window)
            elif limits.rpm is not None and window.requests >= limits.rpm:
                retry = _retry_after(_view(body, now), _B_REQ, 2, now, limits.rpm)
                refusal = Refusal("rpm", retry, window)
            elif limits.tpm is not None and window.tokens >= limits.tpm:
                retry = _retry_after(_view(body, now), _B_TOK, 4, now, limits.tpm)
                refusal = Refusal("tpm", retry, window)
            elif limits.parallel is not None and not self._add_flight(buf, key, 1, 0, flights):
                refusal = Refusal("parallel", 1, window)  # no room to count it: refuse
            if refusal is None:
                _bump(body, now, 0)
                window.requests += 1
                window.in_flight = flying + (1 if limits.parallel is not None else 0)
                if window.requests_reset == 0:
                    window.requests_reset = WINDOW
            self._store(buf, index, key, body)
            return window, refusal

    def settle(self, scope: str, tokens: int, now: int, parallel: bool) -> None:
        """Book the request's tokens in this second and end its in-flight count."""
        key = self._keys.get(scope) or self._key_of(scope)
        with self._lock as buf:
            if tokens > 0:
                index, body = self._slot(buf, key, now, claim=True)
                _advance(body, now)
                _bump(body, now, tokens)
                self._store(buf, index, key, body)
            if parallel:
                self._add_flight(buf, key, -1)

    def window(self, scope: str, now: int) -> Window:
        """The scope's window now, without counting anything."""
        key = self._keys.get(scope) or self._key_of(scope)
        with self._lock as buf:
            flying = self._in_flight(buf, key, False)
            found = self._slot(buf, key, now, claim=False)
            if found is None:
                return Window(0, 0, flying, 0, 0)
            body = found[1]
            _advance(body, now)  # on a copy: nothing is written
            return _measure(body, now, flying)

    # -- budgets ----------------------------------------------------------------------

    def _budget(self, buf, key: bytes, index: int) -> tuple[int, int, int] | None:
        """(last used, period, spent) of a budget entry if its checksum holds."""
        at = self._budget_entries + index * _BUDGET.size
        raw = buf[at : at + _BUDGET.size]
        crc, used, period, spent = _BUDGET.unpack(raw)
        if crc != zlib.crc32(raw[4:], zlib.crc32(key)) or spent < 0:
            return None
        return used, period, spent

    def _put_budget(self, buf, index: int, key: bytes, period: int, spent: int) -> None:
        raw = _BUDGET.pack(0, int(time.time()) & _U32, period, spent)[4:]
        at = self._budget_entries + index * _BUDGET.size
        buf[at : at + _BUDGET.size] = _U32S.pack(zlib.crc32(raw, zlib.crc32(key))) + raw
        buf[self._budget_keys + index * _KEY : self._budget_keys + (index + 1) * _KEY] = key

    def _budget_entry(self, buf, key: bytes, claim: bool) -> tuple[int, int, int] | None:
        """(index, period, spent) of the scope's budget entry; a new one (period unknown)
        if it has none and `claim`."""
        home = self._home(key, self.budgets)
        at = self._budget_keys + home * _KEY
        region = buf[at : at + self.probe * _KEY]
        found = _first_aligned(region, key)
        if found is not None:
            entry = self._budget(buf, key, home + found)
            if entry is not None:
                return home + found, entry[1], entry[2]
            buf[at + found * _KEY : at + (found + 1) * _KEY] = _EMPTY  # garbage
            self._counts["reset"] += 1
        if not claim:
            return None
        free = _first_aligned(region, _EMPTY) if found is None else found
        if free is None:
            # Evict: garbage first, else the least recently used entry with nothing
            # reserved (its spend is reloaded from the database), else the least
            # recently used one.
            now = int(time.time())
            best = None
            for j in range(self.probe):
                other = region[j * _KEY : (j + 1) * _KEY]
                entry = self._budget(buf, other, home + j)
                if entry is None:
                    self._counts["reset"] += 1
                    best = (-1, 0, j)
                    break
                idle = 1 if self._in_flight(buf, other, purge=False, field=3) == 0 else 0
                rank = (idle, _age(now, entry[0]), j)
                if best is None or rank > best:
                    best = rank
            free = best[2]
            if best[0] >= 0:
                self._counts["reclaimed" if best[0] else "evicted"] += 1
        self._put_budget(buf, home + free, key, _NO_PERIOD, 0)
        return home + free, _NO_PERIOD, 0

    def reserve(
        self, scope: str, period: int, budget: int, estimate: int, load_spent,
        minimum: int | None = None,
    ) -> tuple[int, int, bool]:  # fmt: skip
        """Reserve `estimate` micro-dollars of the scope's budget for one request, or what
        the budget can still pay if that is less but at least `minimum` (`granted()`).

        `period` identifies the budget period; the first use of a period takes the spend so
        far from `load_spent()` (the database), once for all workers (again whenever this
        file lost it: rebuilt, evicted). Returns (spent, reserved by others, admitted).
        """
        minimum = estimate if minimum is None else min(minimum, estimate)
        key = self._keys.get(scope) or self._key_of(scope)
        with self._lock as buf:
            index, known, spent = self._budget_entry(buf, key, claim=True)
            if known != period:
                spent = max(0, int(load_spent()))
                self._put_budget(buf, index, key, period, spent)
            flights = self._flight_list(buf, key)
            reserved = self._in_flight(buf, key, False, 3, flights)
            if spent + reserved + minimum > budget:
                reserved, flights = self._in_flight(buf, key, purge=True, field=3), None
            if spent + reserved + minimum > budget:
                return spent, reserved, False
            take = granted(budget, estimate, spent, reserved)
            if not self._add_flight(buf, key, 0, take, flights):
                return spent, reserved, False  # no room to hold the reservation: refuse
            return spent, reserved, True

    def settle_budget(self, scope: str, period: int, estimate: int, cost: int) -> None:
        """Give back the reservation and add the request's real cost to its period."""
        key = self._keys.get(scope) or self._key_of(scope)
        with self._lock as buf:
            self._add_flight(buf, key, 0, -estimate)
            found = self._budget_entry(buf, key, claim=False)
            if found is not None and found[1] == period:
                self._put_budget(buf, found[0], key, period, found[2] + max(0, cost))

    def reserve_and_admit(
        self, budget_scope: str, period: int, budget: int, estimate: int, load_spent,
        scope: str, limits: Limits, now: int, minimum: int | None = None,
    ) -> tuple[int, int, bool, Window | None, Refusal | None]:  # fmt: skip
        """`reserve`, then `admit`; nothing stays taken unless both admit (the shared
        Redis limiter does both in one round trip). Returns (spent, reserved, budget
        admitted, window, refusal); no window when the budget refused. One hold of the
        file's lock for both (each lock is three system calls)."""
        with self._lock:
            spent, reserved, admitted = self.reserve(
                budget_scope, period, budget, estimate, load_spent, minimum
            )
            if not admitted:
                return spent, reserved, False, None, None
            window, refusal = self.admit(scope, limits, now)
            if refusal is not None:
                take = granted(budget, estimate, spent, reserved)
                self.settle_budget(budget_scope, period, take, 0)
        return spent, reserved, True, window, refusal

    def settle_many(self, items: list[tuple]) -> None:
        """Several settlements: ("w", scope, now, tokens, parallel) for a window, ("b",
        scope, period, estimate, cost) for a budget (one round trip in Redis; one hold of
        the file's lock here)."""
        with self._lock:
            for kind, scope, first, second, third in items:
                if kind == "w":
                    self.settle(scope, second, first, third)
                else:
                    self.settle_budget(scope, first, second, third)

    def spent(self, scope: str, period: int) -> int | None:
        """The scope's spend in the period, if this host has counted it."""
        key = self._keys.get(scope) or self._key_of(scope)
        with self._lock as buf:
            found = self._budget_entry(buf, key, claim=False)
            return found[2] if found is not None and found[1] == period else None

    # -- upkeep -----------------------------------------------------------------------

    def forget(self, owner: str) -> int:
        """Free the window slots and budget entries of every scope of a key that is gone:
        `forget("ck:7")` frees `ck:7`, `ck:7:budget`…, `forget("pk:3")` frees `pk:3`,
        `pk:3:gpt-4o`…; never `ck:70`. Requests still in flight give their places back
        as they end. Returns the number of entries freed."""
        if _owner(owner) != owner or owner.count(":") != 1:
            raise ValueError(f"forget() takes a key's scope prefix like 'ck:7', not {owner!r}")
        tag = _hash8(owner)
        freed = 0
        with self._lock as buf:
            for at, count in (
                (self._slot_keys, self.slots + self.probe - 1),
                (self._budget_keys, self.budgets + self.probe - 1),
            ):
                region = buf[at : at + count * _KEY]
                pos = region.find(tag)
                while pos >= 0:
                    if pos % _KEY:
                        pos = region.find(tag, pos + 1)
                        continue
                    buf[at + pos : at + pos + _KEY] = _EMPTY
                    freed += 1
                    pos = region.find(tag, pos + _KEY)
            self._where.clear()
        return freed

    def stats(self) -> dict:
        """What the file holds now (entries in use per table, the database id in its
        header) and what this process has seen happen: slots `reclaimed` (idle, reused)
        and `evicted` (least recently used, still counting), entries `reset` (failed
        their checksum), file `rebuilt` / `reopened`, `flights_reclaimed` (dead pids)."""
        with self._lock as buf:  # copied under the lock, counted after it
            regions = {
                "slots_used": buf[self._slot_keys : self._slot_keys + self._index_bytes[0]],
                "flights_used": buf[self._flight_keys : self._flight_keys + self._index_bytes[1]],
                "budgets_used": buf[self._budget_keys : self._budget_keys + self._index_bytes[2]],
            }
            text = _HEAD.unpack(buf[: _HEAD.size])[-1]
        used = {}
        for name, region in regions.items():
            words = memoryview(region).cast("Q")
            used[name] = sum(1 for i in range(0, len(words), 2) if words[i] or words[i + 1])
        return {
            **used,
            "slots": self.slots,
            "flights": self.flights,
            "budgets": self.budgets,
            "database_id": text.rstrip(b"\0").decode(errors="replace"),
            "size": self._size,
            **self._counts,
        }
