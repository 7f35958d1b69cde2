"""Wall-clock time as an object, so tests can move it instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime


class Clock:
    """The real clock: aware UTC datetimes."""

    def now(self) -> datetime:
        """The current time in UTC."""
        return datetime.now(UTC)
