"""A circuit breaker per upstream (seed 001): when attempts to one upstream host fail
(5xx, time-outs, refused or broken connections) `failures` times within `window` seconds,
every key of that host is passed over for `cooldown` seconds; then one attempt (the
half-open probe) decides: an answer closes the circuit, a failure opens it again. Keys of
other upstreams keep serving.

The circuits live in a small shared, memory-mapped file (`instance/circuits.bin`), so
every worker counts the same failures, skips the same open upstream, sends one probe
between them, and the admin sees one state whichever worker answers. The clock is the
gateway's. The common case (a closed circuit) reads the map without a lock; only failures,
probes and the first answer after a failure take the file lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from gateway import process
from gateway.policy import Outcome

FAILURES = {Outcome.SERVER_ERROR, Outcome.TIMEOUT, Outcome.CONNECTION_ERROR, Outcome.BAD_RESPONSE}
# Failure times kept per upstream: KEYRELAY_BREAKER_FAILURES above this counts as this.
RING = 64
OPENED, CLOSED = "opened", "closed"  # what `Breaker.record` reports, for the audit
ENTRIES = 1024  # upstream hosts; a full table leaves a new host's circuit closed

_MAGIC, _VERSION = b"KRCIRC", 1
_HEAD = struct.Struct("<6sHII")  # magic, version, entries, ring
# host key, open_until (0: closed), probe pid (0: none), probe started, failures within
# the window when last counted, next ring position, then the ring of failure times.
_ENTRY = struct.Struct(f"<8sdidII{RING}d")
_STATE = struct.Struct("<8sd")  # the entry's head: what the lock-free read needs
_HEAD_FIELDS = struct.Struct("<8sdidII")  # the entry without its ring
_PAGE = mmap.PAGESIZE


def upstream_of(base_url: str) -> str:
    """The upstream a key talks to: scheme, host and port of its base URL."""
    try:
        parts = urlsplit(base_url)
    except ValueError:  # saved before base_url was checked: its own circuit, then
        return base_url
    return f"{parts.scheme}://{parts.netloc}"


def _key(host: str) -> bytes:
    return hashlib.blake2b(host.encode(), digest_size=8).digest() or b"\1" * 8


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Table:
    """The shared file: a header, then ENTRIES fixed entries found by linear probing."""

    def __init__(self, path: Path) -> None:
        self.path = os.fspath(path)
        self.size = -(-(_HEAD.size + ENTRIES * _ENTRY.size) // _PAGE) * _PAGE
        self.header = _HEAD.pack(_MAGIC, _VERSION, ENTRIES, RING)
        self._pid = None
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._where: dict[bytes, int] = {}
        self._mutex = threading.Lock()

    def _attach(self) -> None:
        """Open (after a fork, again) and map the file, rebuilding one that is not ours."""
        if self._fd >= 0 and self._pid == process.pid():
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_size != self.size or os.pread(fd, _HEAD.size, 0) != self.header:
                os.ftruncate(fd, 0)  # another layout, or torn: circuits are cheap to relearn
                os.ftruncate(fd, self.size)
                os.pwrite(fd, self.header, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        self._map = mmap.mmap(fd, self.size)
        self._fd, self._pid = fd, process.pid()
        self._where.clear()

    def offset(self, key: bytes, claim: bool) -> int | None:
        """Where the host's entry is (claiming a free one if asked; under the lock)."""
        index = self._where.get(key)
        buf = self._map
        if index is not None and buf[index : index + 8] == key:
            return index
        home = int.from_bytes(key[:4], "little") % ENTRIES
        for step in range(ENTRIES):
            at = _HEAD.size + ((home + step) % ENTRIES) * _ENTRY.size
            found = buf[at : at + 8]
            if found == key:
                self._where[key] = at
                return at
            if found == b"\0" * 8:
                if not claim:
                    return None
                buf[at : at + 8] = key
                self._where[key] = at
                return at
        return None

    def peek(self, key: bytes) -> float:
        """The circuit's open_until, read without the lock (0: closed or unknown). A torn
        read of a slot being claimed only misses the key: this attempt goes ahead."""
        self._attach()
        at = self.offset(key, claim=False)
        if at is None:
            return 0.0
        found, open_until = _STATE.unpack_from(self._map, at)
        return open_until if found == key else 0.0

    def read(self, at: int) -> list:
        return list(_ENTRY.unpack_from(self._map, at))

    def write(self, at: int, entry: list) -> None:
        _ENTRY.pack_into(self._map, at, *entry)

    def __enter__(self) -> _Table:
        self._attach()
        self._mutex.acquire()
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._mutex.release()


class Breaker:
    """The circuits of every upstream, shared by the workers through `path`."""

    def __init__(
        self, clock, failures: int, window: float, cooldown: float, path: Path | None = None
    ) -> None:
        self.clock = clock
        self.threshold = min(failures, RING)
        self.window, self.cooldown = window, cooldown
        self._table = _Table(path) if path is not None and self.threshold > 0 else None
        self._keys: dict[str, bytes] = {}

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def _host_key(self, base_url: str) -> bytes:
        key = self._keys.get(base_url)
        if key is None:
            if len(self._keys) > 10_000:
                self._keys.clear()
            key = self._keys[base_url] = _key(upstream_of(base_url))
        return key

    def allow(self, base_url: str) -> bool:
        """Whether a key of this upstream may be tried now (the half-open probe once)."""
        if self._table is None:
            return True
        key = self._host_key(base_url)
        if not self._table.peek(key):
            return True
        with self._table as table:
            at = table.offset(key, claim=False)
            if at is None:
                return True
            entry = table.read(at)
            _, open_until, probe_pid, probe_at = entry[:4]
            now = self._now()
            if not open_until:
                return True
            if now < open_until:
                return False
            if probe_pid and _pid_alive(probe_pid) and now - probe_at < max(self.cooldown, 60):
                return False  # another attempt (this worker's or another's) is probing
            entry[2], entry[3] = process.pid(), now
            table.write(at, entry)
            return True

    def release(self, base_url: str) -> None:
        """A probe that made no attempt after all: the next request may probe."""
        if self._table is None or not self._table.peek(self._host_key(base_url)):
            return
        with self._table as table:
            at = table.offset(self._host_key(base_url), claim=False)
            if at is not None:
                entry = table.read(at)
                entry[2], entry[3] = 0, 0.0
                table.write(at, entry)

    def record(self, base_url: str, outcome: Outcome) -> str | None:
        """An attempt's outcome: failures open the circuit; any answer closes it. Says
        OPENED when this failure opened a closed circuit, CLOSED when this answer closed an
        open one (each once, whichever worker saw it), else None."""
        if self._table is None:
            return None
        key = self._host_key(base_url)
        if outcome not in FAILURES:
            return CLOSED if self._close(key) else None
        now = self._now()
        opened = None
        with self._table as table:
            at = table.offset(key, claim=True)
            if at is None:
                return None  # no room: this host goes without a breaker
            entry = table.read(at)
            if entry[2]:  # the probe failed: open again (still failing, not news)
                self._open(entry, now)
            else:
                ring = entry[6:]
                ring[entry[5]] = now  # the oldest failure time makes room
                entry[5] = (entry[5] + 1) % RING
                entry[6:] = ring
                recent = [t for t in ring if t > now - self.window]
                entry[4] = len(recent)
                if len(recent) >= self.threshold:
                    opened = None if entry[1] else OPENED
                    self._open(entry, now)
            table.write(at, entry)
        return opened

    def _open(self, entry: list, now: float) -> None:
        entry[1], entry[2], entry[3], entry[4], entry[5] = now + self.cooldown, 0, 0.0, 0, 0
        entry[6:] = [0.0] * RING

    def _close(self, key: bytes) -> bool:
        """The upstream answered: forget its failures (the lock only if there were any).
        True when the circuit was open (or half-open) and this closed it."""
        table = self._table
        table._attach()
        at = table.offset(key, claim=False)
        if at is None:
            return False
        entry = _HEAD_FIELDS.unpack_from(table._map, at)
        if entry[0] != key or not (entry[1] or entry[4]):
            return False
        with table:
            was_open = bool(table.read(at)[1])  # again under the lock: one worker says so
            table.write(at, [key, 0.0, 0, 0.0, 0, 0] + [0.0] * RING)
        return was_open

    def state(self, base_url: str) -> dict | None:
        """`{"state": "open" | "half_open", "until": ISO time}` of the key's upstream, or
        None while its circuit is closed."""
        if self._table is None:
            return None
        open_until = self._table.peek(self._host_key(base_url))
        if not open_until:
            return None
        until = datetime.fromtimestamp(open_until, UTC)
        half_open = self._now() >= open_until
        return {"state": "half_open" if half_open else "open", "until": until.isoformat()}
