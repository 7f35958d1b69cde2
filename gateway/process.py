"""This process's id without a system call.

`os.getpid()` asks the kernel every time (about 0.5 µs on the benchmark's VM), and the
limits file and the circuit breaker check it on each use, several times per request, to
notice a fork. The id is read once and again in every child a fork makes.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def pid() -> int:
    """This process's id, as `os.getpid()` would say."""
    return _pid
