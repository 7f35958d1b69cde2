"""One installer at a time on this machine: what the tests install for themselves (Debian
packages, npm packages) is shared by every test process here (pytest-xdist workers, another
checkout's run), so its check-and-install runs under an exclusive file lock."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCKS = Path.home() / ".cache" / "keyrelay-tests" / "locks"

# apt-get waits for dpkg's own lock (held by an apt outside the tests) instead of failing.
APT_WAIT = ["-o", "DPkg::Lock::Timeout=600"]


@contextmanager
def exclusive(name: str) -> Iterator[None]:
    """Hold the machine-wide lock `name` (a file under LOCKS) for the block."""
    LOCKS.mkdir(parents=True, exist_ok=True)
    with (LOCKS / f"{name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
