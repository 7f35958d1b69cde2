"""An append-only journal of finished requests: what makes booking durable without a commit.

A request's rows are one JSON line, appended with a single `os.write` to a file opened
with O_APPEND. Once that call returns the line is in the kernel: a `kill -9` of the
process right after cannot lose it (the same guarantee SQLite gives in WAL mode with
`synchronous=NORMAL`). The database is written afterwards, off the request's path, and
the journal is emptied once its lines are committed.

Each process writes its own segment files and holds an exclusive `flock` on each while it
lives, so a segment nobody holds belongs to a process that died: `orphans()` finds those
for replay. Locks go with the process however it ends, so no pid bookkeeping is needed.

A segment's name starts with the identity of the database it books into
(`<database id>.<pid>-<random>.journal`). A segment of another database (a new database
made beside an old instance folder) is never replayed into this one: it is moved to
`foreign/` with a log line, for whoever owns that database. Segments named by an older
version carry no identity; they are taken as this database's unless their last write is
older than the database itself.

A full disk must not cost an answer its line: a segment keeps space allocated ahead of its
last line (`posix_fallocate`), so an append writes into blocks the file already owns.
The allocated tail is zeros; a reader stops at the first zero byte. When even the space
kept ahead runs low and the disk gives no more, the gateway stops admitting requests
(503) until committed lines free it (`Books.has_room`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

SUFFIX = ".journal"
# A segment is swapped for a fresh one past this size; it is deleted once fully committed.
ROTATE_BYTES = 4 * 1024 * 1024
FOREIGN = "foreign"
# Space a segment keeps allocated past its last line (KEYRELAY_JOURNAL_RESERVE_BYTES).
RESERVE_BYTES = 1024 * 1024


class JournalFull(OSError):
    """The journal cannot take a line: the disk gave no space, none was kept ahead."""

    def __init__(self, detail: str) -> None:
        super().__init__(errno.ENOSPC, f"the booking journal is full: {detail}")


@dataclass(frozen=True)
class DatabaseIdentity:
    """Which database the instance's state files belong to: its UUID (`keyrelay_meta`)
    and when it was born (UTC)."""

    id: str
    born: datetime

    def __post_init__(self) -> None:
        if self.born.tzinfo is None:  # stored UTC, read back without a zone
            object.__setattr__(self, "born", self.born.replace(tzinfo=UTC))


def owner(path: Path) -> str | None:
    """The database id a segment's name carries; None for a name without one."""
    head, dot, _ = path.name.partition(".")
    return head if dot and "-" not in head else None


def encode(entry: dict) -> bytes:
    """One journal line (the entry holds JSON types only: times are text already)."""
    return orjson.dumps(entry) + b"\n"


class Segment:
    """One journal file this process appends to, locked for as long as it is open, with
    `reserve` bytes allocated ahead of its last line."""

    def __init__(self, directory: Path, database_id: str = "", reserve: int = 0) -> None:
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        if database_id:
            name = f"{database_id}.{name}"
        # Locked under a name recovery ignores, then renamed: no other process can take
        # (and delete) a segment between its creation and its lock.
        staging = directory / f"{name}.new"
        self.fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.path = directory / f"{name}{SUFFIX}"
        os.rename(staging, self.path)
        self.size = 0  # where the next line goes: just after the last whole one
        self.allocated = 0  # bytes the file owns on disk (zeros past `size`)
        self.reserve = reserve or RESERVE_BYTES
        self.preallocates = True  # False on a file system without fallocate
        self.pending = 0  # lines appended and not yet committed
        self.allocate()

    @property
    def room(self) -> int:
        """Bytes an append can write without asking the disk for space."""
        return self.allocated - self.size if self.preallocates else self.reserve

    def allocate(self, need: int = 0) -> bool:
        """Own `reserve` bytes past the last line (and `need` more); False when the disk
        has no space to give (what is owned already stays usable)."""
        target = self.size + need + self.reserve
        if not self.preallocates or self.allocated >= target:
            return True
        try:
            os.posix_fallocate(self.fd, 0, target)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # written as it comes
                self.preallocates = False
                return True
            return False
        self.allocated = target
        return True

    def append(self, line: bytes) -> None:
        """Write one line after the last one; raises OSError (JournalFull when the disk
        has no space for it) and leaves the segment as it was."""
        if len(line) > self.room and not self.allocate(len(line)):
            raise JournalFull(f"{len(line)} bytes to write, {self.room} kept ahead")
        written = os.pwrite(self.fd, line, self.size)
        if written != len(line):  # the next line overwrites the torn one
            raise OSError(f"journal write was short ({written} of {len(line)} bytes)")
        self.size += written
        self.pending += 1
        if self.room < self.reserve // 2:
            self.allocate()  # ahead of need; a full disk leaves what is owned

    def empty(self) -> None:
        """Drop the committed content (only when nothing in it is pending). Zeroed, not
        truncated: the space stays this segment's."""
        if self.preallocates:
            os.pwrite(self.fd, bytes(self.size), 0)
        else:
            os.ftruncate(self.fd, 0)
        self.size = 0

    def discard(self) -> None:
        """Delete the file and release it."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)


def orphans(
    directory: Path, database: DatabaseIdentity | None = None
) -> Iterator[tuple[Path, list[dict]]]:
    """Segments of this database no live process holds, with their entries; each is deleted
    after the caller has taken it (the generator resumes only once the entries are in the
    database). Dead segments of another database are set aside in `foreign/`."""
    if not directory.is_dir():
        return
    paths = sorted(directory.glob(f"*{SUFFIX}"))
    if database is not None:  # ours, set aside while another database was in use
        paths += sorted((directory / FOREIGN).glob(f"{database.id}.*{SUFFIX}"))
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # replayed and deleted by another process meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its writer is alive
            if database is not None and not _belongs(path, fd, database):
                _set_aside(path, directory)
                continue
            entries = list(_read(fd, path))
            yield path, entries
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        finally:
            os.close(fd)


def _belongs(path: Path, fd: int, database: DatabaseIdentity) -> bool:
    """Whether a dead segment books into this database."""
    named = owner(path)
    if named is not None:
        return named == database.id
    # An older version's segment: ours unless it was last written before we were born.
    written = datetime.fromtimestamp(os.fstat(fd).st_mtime, UTC)
    return not holds_lines(path) or written >= database.born


def _set_aside(path: Path, directory: Path) -> None:
    """Move another database's segment out of the way, keeping it for its owner."""
    aside = directory / FOREIGN
    aside.mkdir(exist_ok=True)
    try:
        os.rename(path, aside / path.name)
    except FileNotFoundError:
        return
    log.warning(
        "journal %s belongs to database %s, not to this one: kept aside in %s, not replayed",
        path.name,
        owner(path) or "(made before this database)",
        aside,
    )


def live_segments(directory: Path, database: DatabaseIdentity | None = None) -> list[Path]:
    """Segments of this database still holding lines a live process has not committed
    (a writer empties its segment once everything in it is committed)."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.glob(f"*{SUFFIX}"):
        if database is not None and owner(path) not in (None, database.id):
            continue
        if holds_lines(path):
            found.append(path)
    return found


def holds_lines(path: Path) -> bool:
    """Whether a segment has a line in it (an emptied one is zeros, or nothing)."""
    try:
        with open(path, "rb") as handle:
            first = handle.read(1)
    except FileNotFoundError:
        return False
    return first not in (b"", b"\0")


def backlog_bytes(path: Path) -> int:
    """The bytes of lines in a segment, up to its zero-filled tail."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    end = data.find(b"\0")
    return len(data) if end < 0 else end


def _read(fd: int, path: Path) -> Iterator[dict]:
    with os.fdopen(os.dup(fd), "rb") as handle:
        for number, whole in enumerate(handle, 1):
            line = whole.partition(b"\0")[0]  # zeros: the space kept ahead, never written
            if not line:
                break
            if not line.endswith(b"\n"):
                log.warning("journal %s: skipping a torn last line (%d bytes)", path, len(line))
                break
            try:
                yield decode(line)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                log.warning("journal %s: skipping unreadable line %d: %s", path, number, exc)


def decode(line: bytes) -> dict:
    """A journal line back into the entry `encode` was given."""
    entry = orjson.loads(line)
    if not isinstance(entry, dict) or not isinstance(entry.get("log"), dict):
        raise ValueError("not a journal entry")
    return entry
