"""Why a provider key is in its state and until when, which limits bind it, and what the
upstream said — as sentences a person reads (dashboard, admin API), never raw JSON."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from gateway import periods
from gateway.keys import selection
from gateway.keys.messages import SYSTEM, upstream_message
from models.provider_keys import (
    ACTIVE,
    AUTH_FAILED,
    COOLING_DOWN,
    DISABLED,
    EXPIRED,
    LIMIT_REACHED,
    STATUS_SENTENCES,
)
from models.types import usd


def local_time(moment: datetime, now: datetime) -> str:
    """`14:05` today, `Tue 24 Nov 00:00` another day, in the configured zone (unlabelled)."""
    local, today = moment.astimezone(periods.zone()), now.astimezone(periods.zone())
    if local.date() == today.date():
        return local.strftime("%H:%M:%S" if local.second else "%H:%M")
    if local.year == today.year:
        return local.strftime("%a %d %b %H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def zoned_time(moment: datetime, now: datetime) -> str:
    """local_time labelled with the zone, for text read outside a labelled page (the API)."""
    return f"{local_time(moment, now)} {periods.zone_name()}"


@dataclass
class KeyState:
    """A key's effective status, the sentence that explains it, and its times."""

    status: str
    sentence: str | None
    until: datetime | None = None  # when it serves again by itself
    since: datetime | None = None  # when it went out of the pool
    by: str | None = None  # who took it out: a user, the master key, or `system`
    message: str | None = None  # the upstream's last message, readable


def key_state(
    key, now: datetime, threshold: int | None = None, when: Callable = None, retest_at=None
) -> KeyState:
    """Why the key (usage attached) is in its status now; `when(moment, now)` writes times
    (zoned_time by default). Active keys have no sentence unless failures are piling up.
    `retest_at`: when the scheduler next re-tests keys taken out by the gateway (False: it
    does not; None: not said)."""
    when = when or zoned_time
    status = selection.effective_status(key, now)
    message = upstream_message(key.last_error)
    by, since = getattr(key, "disabled_by", None), getattr(key, "disabled_at", None)
    state = KeyState(status, None, selection.back_at(key, now), since, by, message)
    if status == LIMIT_REACHED:
        state.sentence = _limit_sentence(key, state.until, now, when)
    elif status == COOLING_DOWN:
        said = f" The upstream said: {message}." if message else ""
        state.sentence = f"Rate limited by the upstream; tried again at {when(state.until, now)}."
        state.sentence += said
    elif status == DISABLED:
        state.sentence = _disabled_sentence(key, by, since, message, threshold, now, when)
        if by == SYSTEM or (by is None and key.consecutive_failures):
            state.sentence += _retest(retest_at, now, when)
    elif status == AUTH_FAILED:
        at = f" at {when(since, now)}" if since else ""
        said = f": {message}" if message else ""
        state.sentence = (
            f"The upstream refused the key{at}{said}. Out of the pool until a test passes "
            "(Test, or Restore invalid keys) or the secret is re-entered."
        ) + _retest(retest_at, now, when)
    elif status == EXPIRED:
        at = f" at {when(key.expires_at, now)}" if key.expires_at else ""
        state.sentence = f"Expired{at}; give it a new expiry date to bring it back."
    elif status in STATUS_SENTENCES:
        state.sentence = STATUS_SENTENCES[status]
    elif status == ACTIVE and key.consecutive_failures and message:
        noun = "failure" if key.consecutive_failures == 1 else "failures"
        state.sentence = f"{key.consecutive_failures} {noun} in a row; last: {message}"
    return state


def _retest(retest_at, now: datetime, when) -> str:
    """The sentence's tail saying when the scheduler re-tests the key by itself."""
    if retest_at is None:
        return ""
    if retest_at is False:
        return " No automatic re-test: the scheduler or its re-validation is off."
    return f" Next automatic re-test: {when(max(retest_at, now), now)}."


def _disabled_sentence(key, by, since, message, threshold, now, when) -> str:
    at = f" at {when(since, now)}" if since else ""
    if by == SYSTEM or (by is None and key.consecutive_failures):
        count = key.consecutive_failures or threshold
        after = f" after {count} failures in a row" if count else " after repeated failures"
        said = f"; last: {message}" if message else ""
        return (
            f"Disabled automatically{after}{at}{said}. Restore invalid keys re-tests it; "
            "Enable brings it back at once."
        )
    who = f" by {by}" if by else " by an admin"
    return f"Disabled{who}{at}. Enable brings it back."


def _limit_sentence(key, back: datetime | None, now: datetime, when) -> str:
    what, period = selection.limit_hit(key)
    if what == selection.CREDITS_EXHAUSTED:
        synced = getattr(key, "synced_at", None)
        at = f" at the usage sync of {when(synced, now)}" if synced else ""
        return (
            f"The provider reported nothing left on the account{at}; the next sync that "
            "reports more brings it back."
        )
    bound = next((b for b in binding_limits(key, now) if b.label == what), None)
    if bound is None:
        return f"{what.capitalize()} reached."
    text = f"{what.capitalize()} reached: {bound.used_text} of {bound.limit_text}"
    if back is not None:
        return f"{text}; serves again at {when(back, now)}, when the {period} resets."
    return f"{text}; raise or remove the limit to use it again."


@dataclass
class Limit:
    """One limit that binds a key now: how much of it is used, and when it resets."""

    label: str  # "daily token limit", "RPM", "gpt-4o TPM", …
    used: int
    limit: int
    unit: str  # "tokens", "micros" (money), "requests"
    resets_at: datetime | None = None
    resets_in_seconds: int | None = None  # sliding windows

    @property
    def percent(self) -> float:
        """How much of the limit is used: above 100 when the usage went past it."""
        return round(100.0 * self.used / self.limit, 1) if self.limit else 100.0

    @property
    def used_text(self) -> str:
        return _amount(self.used, self.unit)

    @property
    def limit_text(self) -> str:
        return _amount(self.limit, self.unit)


def _amount(value: int, unit: str) -> str:
    if unit == "micros":
        return money(value)
    return f"{value:,} {unit}"


def money(micros: int | None) -> str:
    """Dollars for people: `$4.07`, `$0.80`, `$1,234.56`; below a cent, the digits that
    matter (`$0.0042`, `$0.000001`); exact amounts stay in the API and exports."""
    value = int(micros or 0)
    sign, value = ("-", -value) if value < 0 else ("", value)
    if value == 0 or value >= 10_000:
        cents = (value + 5_000) // 10_000  # half up, to whole cents
        return f"{sign}${cents // 100:,}.{cents % 100:02d}"
    text = usd(value).rstrip("0")  # below a cent: every digit down to the micro-dollar
    return f"{sign}${text}"


# (limit column, usage attribute, label, unit, resets: "day" | "month" | None)
_TOKEN_AND_COST = (
    ("daily_token_limit", "used_today", "daily token limit", "tokens", "day"),
    ("monthly_token_limit", "used_month", "monthly token limit", "tokens", "month"),
    ("daily_cost_limit_micros", "cost_today", "daily cost limit", "micros", "day"),
    ("monthly_cost_limit_micros", "cost_month", "monthly cost limit", "micros", "month"),
    ("total_cost_limit_micros", "cost_total", "total cost limit", "micros", None),
)


def binding_limits(key, now: datetime, windows: Callable | None = None) -> list[Limit]:
    """Every limit the key (usage attached) has, tightest first: tokens and cost per day,
    month and ever, and — given `windows(scope)` → limiter Window — RPM/TPM in the last
    minute, per key and per model."""
    resets = {"day": periods.next_day_start(now), "month": periods.next_month_start(now)}
    found = []
    for column, used_attr, label, unit, period in _TOKEN_AND_COST:
        limit = getattr(key, column, None)
        if limit is not None:
            used = int(getattr(key, used_attr, 0) or 0)
            found.append(Limit(label, used, limit, unit, resets.get(period)))
    if windows is not None:
        scopes = [(f"pk:{key.id}", "", {"rpm": key.rpm_limit, "tpm": key.tpm_limit})]
        scopes += [
            (f"pk:{key.id}:{model}", f"{model} ", limits)
            for model, limits in sorted((key.model_limits or {}).items())
        ]
        for scope, prefix, limits in scopes:
            if not limits.get("rpm") and not limits.get("tpm"):
                continue
            window = windows(scope)
            if limits.get("rpm"):
                rpm = int(limits["rpm"])
                reset = window.requests_reset
                found.append(Limit(f"{prefix}RPM", window.requests, rpm, "requests", None, reset))
            if limits.get("tpm"):
                tpm, reset = int(limits["tpm"]), window.tokens_reset
                found.append(Limit(f"{prefix}TPM", window.tokens, tpm, "tokens", None, reset))
    return sorted(found, key=lambda b: -b.percent)
