"""Jinja filters that write numbers, money and times for people: cents with two decimals,
large token counts abbreviated (exact on hover), times in KEYRELAY_TIMEZONE, "in 12 min"."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

from markupsafe import Markup, escape

from blueprints.common import utcnow
from gateway.keys import states
from gateway.keys.messages import upstream_message


def usd(micros) -> str:
    """`$4.07`; below a cent the digits that matter (`$0.0042`)."""
    return states.money(micros)


def when(value: datetime | None) -> str:
    """`14:05` today, `Tue 24 Nov 00:00` another day, in the configured zone (the page says
    which, once): the one way the dashboard writes a time, as the key states' sentences do."""
    return states.local_time(value, utcnow()) if value else ""


short_time = when  # the older name of the same style


def relative(value: datetime | None) -> str:
    """`in 12 min`, `3 h ago`, `just now`: how far a time is from now."""
    if not value:
        return ""
    seconds = round((value - utcnow()).total_seconds())
    span = abs(seconds)
    if span < 45:
        return "just now" if seconds <= 0 else f"in {span} s"
    if span < 90 * 60:
        text = f"{round(span / 60)} min"
    elif span < 36 * 3600:
        text = f"{round(span / 3600)} h"
    else:
        text = f"{round(span / 86_400)} d"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def iso_time(text: str | None) -> datetime | None:
    """An ISO 8601 string (the breaker's `until`) as a time the other filters write."""
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def tokens(value) -> Markup:
    """`12.3M` with the exact count on hover; counts under 10,000 written out."""
    number = int(value or 0)
    exact = f"{number:,}"
    if abs(number) < 10_000:
        return Markup(exact)
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if abs(number) >= size:
            short = f"{number / size:.1f}".removesuffix(".0") + suffix
            break
    return Markup('<abbr class="count" title="{}">{}</abbr>').format(exact, short)


def per_mtok(dollars) -> str:
    """A price in USD per million tokens (a decimal string) with its unit: `$2.50 / 1M
    tokens`, `$0.075 / 1M tokens` (cents with two decimals, more only when it has them)."""
    if dollars in (None, ""):
        return "—"
    amount = Decimal(str(dollars))
    text = f"{amount:,.6f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')} / 1M tokens"


def readable(error: str | None) -> str:
    """An upstream error as its message (`HTTP 429: Rate limit reached`), not raw JSON."""
    return upstream_message(error) or ""


def detail(value) -> Markup:
    """An audit entry's details as `name: value` pairs (lists joined, yes/no), not a repr."""
    if not value:
        return Markup("")
    if not isinstance(value, dict):
        return escape(_plain(value))
    parts = [
        Markup("<span><b>{}</b>: {}</span>").format(name.replace("_", " "), _plain(item))
        for name, item in value.items()
    ]
    return Markup("; ").join(parts)


def _plain(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_plain(v) for v in value) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_plain(v)}" for k, v in value.items())
    return str(value) if not isinstance(value, float) else json.dumps(value)


FILTERS = {
    "usd": usd,
    "when": when,
    "short_time": short_time,
    "relative": relative,
    "tokens": tokens,
    "iso_time": iso_time,
    "per_mtok": per_mtok,
    "readable": readable,
    "detail": detail,
}


def register(bp) -> None:
    """Make the filters available to every template of the app."""
    for name, function in FILTERS.items():
        bp.add_app_template_filter(function, name)
