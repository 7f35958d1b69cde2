"""Wall-clock time as an object, so tests can move it instead of sleeping."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class Clock:
    """The real clock: aware UTC datetimes."""

    def now(self) -> datetime:
        """The current time in UTC."""
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        """Wait (cooperatively under gevent, which patches time.sleep)."""
        time.sleep(seconds)
