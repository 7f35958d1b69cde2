"""Client-key budgets (F31, F34): a maximum spend in USD per period.

A budget period is derived, never reset by a job: with duration `1h`, `1d`, `7d` or
`30d`, periods are back-to-back windows of that length from the key's creation; with
`1mo`, calendar months from the creation day (clamped to the month's last day); with no
duration the budget is for the key's whole life. So a restart after any downtime lands in
the right period by arithmetic alone.

Under concurrency a request *reserves* its estimated cost before the upstream call (prompt
tokens counted locally plus `max_tokens`, or a default answer length) and settles its real
cost after; a request is refused when spent + reserved + its estimate would pass the
budget. Overshoot is then bounded by how much the in-flight requests' real costs exceed
their estimates (limiter.py keeps spend and reservations shared by all workers).
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

DURATIONS = {
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "1mo": None,  # calendar months
}
# Completion tokens assumed when a request sets no max_tokens.
DEFAULT_ANSWER_TOKENS = 256


def parse_usd(field: str, value) -> int | None:
    """USD as a decimal string or number → integer micro-dollars (None stays None)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"'{field}' must be an amount in USD such as \"10.00\".")
    try:
        amount = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"'{field}' must be an amount in USD such as \"10.00\".") from None
    if not amount.is_finite() or amount < 0 or amount > 10**9:
        raise ValueError(f"'{field}' must be between 0 and 1000000000 USD.")
    micros = amount * 1_000_000
    if micros != micros.to_integral_value():
        raise ValueError(f"'{field}' has more than six decimals (micro-dollars).")
    return int(micros)


def parse_duration(value) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or value not in DURATIONS:
        raise ValueError(f"'budget_duration' must be one of: {', '.join(DURATIONS)}, or null.")
    return value


def _add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year = moment.year + month // 12
    month = month % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def period(
    anchor: datetime, duration: str | None, now: datetime
) -> tuple[datetime, datetime | None]:
    """The budget period containing `now`: (start, end); end None for a lifetime budget."""
    if duration is None or now < anchor:
        return anchor, None
    step = DURATIONS[duration]
    if step is not None:
        count = int((now - anchor) / step)
        start = anchor + count * step
        return start, start + step
    months = (now.year - anchor.year) * 12 + now.month - anchor.month
    start = _add_months(anchor, months)
    if start > now:
        months -= 1
        start = _add_months(anchor, months)
    return start, _add_months(anchor, months + 1)
