"""Days and months in the configured time zone (KEYRELAY_TIMEZONE, F33).

Times are stored in UTC. What a "day" or a "month" is — for daily and monthly limits, the
usage roll-ups and the charts — follows the admin's time zone, so a team in Lagos sees its
daily limit come back at midnight in Lagos. The zone is process-wide: `configure` is
called once by `create_app`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_zone: tzinfo = UTC


def configure(name: str) -> tzinfo:
    """Use the IANA zone `name` for days and months; SystemExit naming the setting if unknown."""
    global _zone
    try:
        _zone = UTC if name in ("", "UTC") else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise SystemExit(
            f"KEYRELAY_TIMEZONE={name!r} is not a known IANA time zone (e.g. UTC, Europe/Berlin)"
        ) from None
    return _zone


def zone() -> tzinfo:
    """The configured zone."""
    return _zone


def zone_name() -> str:
    """The configured zone's name, for messages (`UTC`, `Africa/Lagos`)."""
    return getattr(_zone, "key", "UTC")


def local_day(now: datetime) -> date:
    """The calendar day `now` (aware) falls on in the configured zone."""
    return now.astimezone(_zone).date()


def month_start(day: date) -> date:
    """The first day of the day's month."""
    return day.replace(day=1)


def next_month(day: date) -> date:
    """The first day of the month after the day's month."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def day_start(day: date) -> datetime:
    """The UTC instant the local day begins (00:00 in the zone)."""
    return datetime.combine(day, datetime.min.time(), _zone).astimezone(UTC)


def next_day_start(now: datetime) -> datetime:
    """The UTC instant of the next local midnight after `now`: when daily limits reset."""
    return day_start(local_day(now) + timedelta(days=1))


def next_month_start(now: datetime) -> datetime:
    """The UTC instant the next local month begins: when monthly limits reset."""
    return day_start(next_month(local_day(now)))
