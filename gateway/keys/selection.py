"""Which provider keys may serve a request, and in which order to try them."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

from gateway import periods
from gateway.store import KeyRow
from models.provider_keys import (
    ACTIVE,
    COOLING_DOWN,
    EXPIRED,
    LIMIT_REACHED,
    SECRET_INSECURE,
    SECRET_UNREADABLE,
)

MOST_REMAINING = "most-remaining"
ROUND_ROBIN = "round-robin"
WEIGHTED = "weighted"
PRIORITY = "priority"
LEAST_BUSY = "least-busy"
STRATEGIES = (MOST_REMAINING, ROUND_ROBIN, WEIGHTED, PRIORITY, LEAST_BUSY)
_EPOCH = datetime.min.replace(tzinfo=UTC)


def effective_status(key, now: datetime) -> str:
    """The status that counts now: expired cooldowns are over, keys past their expiry are
    expired, keys at a token or cost limit of this day / month / for ever are out.

    `key` is a KeyRow, or a ProviderKey with its usage attached (keyring.attach_usage).
    """
    status = key.status
    if status == COOLING_DOWN and (key.cooldown_until is None or key.cooldown_until <= now):
        status = ACTIVE
    if status in (ACTIVE, COOLING_DOWN) and key.expires_at is not None and key.expires_at <= now:
        return EXPIRED
    if status == ACTIVE and limit_hit(key) is not None:
        return LIMIT_REACHED
    return status


# (attribute of the limit, attribute of the usage, what it is, when it resets)
_LIMITS = (
    ("daily_token_limit", "used_today", "daily token limit", "day"),
    ("monthly_token_limit", "used_month", "monthly token limit", "month"),
    ("daily_cost_limit_micros", "cost_today", "daily cost limit", "day"),
    ("monthly_cost_limit_micros", "cost_month", "monthly cost limit", "month"),
    ("total_cost_limit_micros", "cost_total", "total cost limit", None),
)


CREDITS_EXHAUSTED = "credits exhausted"


def limit_hit(key) -> tuple[str, str | None] | None:
    """(what, "day" | "month" | None) of the first token/cost limit the key has reached;
    a key whose provider reported nothing left (usage sync) is out until a sync says more."""
    for limit_attr, used_attr, what, period in _LIMITS:
        limit = getattr(key, limit_attr, None)
        if limit is not None and getattr(key, used_attr, 0) >= limit:
            return what, period
    tokens, micros = synced_left(key)
    if (tokens is not None and tokens <= 0) or (micros is not None and micros <= 0):
        return CREDITS_EXHAUSTED, None
    return None


def synced_left(key) -> tuple[int | None, int | None]:
    """(tokens, micro-dollars) the provider said were left at the last usage sync, less
    what this gateway booked on the key since; None where it reported nothing.

    The figure is a snapshot: usage booked after it is subtracted (the usage above what
    the key had booked that day at the sync). A sync of an earlier day counts all of
    today's usage as after it (what came after it on its own day is missed until the
    next sync, a few minutes later)."""
    if getattr(key, "synced_at", None) is None:
        return None, None
    same_day = key.usage_day is not None and periods.local_day(key.synced_at) == key.usage_day
    tokens_since = key.used_today - (key.synced_used_tokens or 0) if same_day else key.used_today
    cost_since = key.cost_today - (key.synced_used_cost_micros or 0) if same_day else key.cost_today
    tokens = key.remaining_tokens
    micros = key.remaining_credit_micros
    return (
        None if tokens is None else tokens - max(0, tokens_since),
        None if micros is None else micros - max(0, cost_since),
    )


def back_at(key, now: datetime) -> datetime | None:
    """When an unusable key can serve again by itself (cooldown over, limit reset), or
    None if only an admin can bring it back (disabled, auth failed, expired, total cost)."""
    status = effective_status(key, now)
    if status == COOLING_DOWN:
        return key.cooldown_until
    if status == LIMIT_REACHED:
        period = limit_hit(key)[1]
        if period == "day":
            return periods.next_day_start(now)
        if period == "month":
            return periods.next_month_start(now)
    return None


def remaining_today(key: KeyRow) -> float:
    """Tokens left under the daily (and monthly) limit and of what the provider last said
    was left (usage sync); unlimited keys have all the room."""
    left = float("inf")
    if key.daily_token_limit is not None:
        left = key.daily_token_limit - key.used_today
    if key.monthly_token_limit is not None:
        left = min(left, key.monthly_token_limit - key.used_month)
    synced = synced_left(key)[0]
    if synced is not None:
        left = min(left, synced)
    return left


def order(
    keys: list[KeyRow],
    strategy: str,
    picked_at: dict[int, datetime],
    rng=random,
    busy: dict[int, int] | None = None,
) -> list[KeyRow]:
    """Sort usable keys by the strategy; `picked_at` spreads requests already in flight.
    The profile's default key comes first, whatever the strategy, while it is usable.

    - most-remaining: most tokens left today, then least recently used;
    - round-robin: least recently used;
    - weighted: a random order in which each key comes first in proportion to its weight;
    - priority: by tier (lower first), most-remaining within a tier, so a lower tier
      serves only when no key of a higher one can;
    - least-busy: fewest requests in flight (`busy`, from every worker), then least
      recently used.
    """

    def last_used(key: KeyRow) -> datetime:
        return max(key.last_used_at or _EPOCH, picked_at.get(key.id, _EPOCH))

    def default(key: KeyRow) -> int:
        return 0 if key.is_default else 1

    if strategy == ROUND_ROBIN:
        return sorted(keys, key=lambda k: (default(k), last_used(k), k.id))
    if strategy == LEAST_BUSY:
        flying = busy or {}
        return sorted(keys, key=lambda k: (default(k), flying.get(k.id, 0), last_used(k), k.id))
    if strategy == WEIGHTED:
        # Efraimidis-Spirakis: sorting by u^(1/w) draws keys without replacement by weight.
        draw = {k.id: rng.random() ** (1.0 / max(1, k.weight or 1)) for k in keys}
        return sorted(keys, key=lambda k: (default(k), -draw[k.id], k.id))
    if strategy == PRIORITY:
        return sorted(
            keys,
            key=lambda k: (default(k), k.priority or 0, -remaining_today(k), last_used(k), k.id),
        )
    return sorted(keys, key=lambda k: (default(k), -remaining_today(k), last_used(k), k.id))


def unavailable_summary(keys: list[KeyRow], now: datetime) -> str:
    """`3 keys cooling down until 12:04:10 UTC, 1 auth_failed` for a no-keys error."""
    statuses = Counter(effective_status(key, now) for key in keys)
    parts = []
    for status, count in sorted(statuses.items()):
        noun = "key" if count == 1 else "keys"
        if status == COOLING_DOWN:
            until = min(k.cooldown_until for k in keys if effective_status(k, now) == status)
            parts.append(f"{count} {noun} cooling down until {until:%H:%M:%S} UTC")
        elif status == LIMIT_REACHED:
            at_limit = [k for k in keys if effective_status(k, now) == status]
            reasons = sorted({limit_hit(k)[0] for k in at_limit})
            parts.append(f"{count} {noun} at a limit ({', '.join(reasons)}{_reset_text(at_limit)})")
        elif status in _SECRET_TEXT:
            parts.append(f"{count} {noun} {status} ({_SECRET_TEXT[status]})")
        else:
            parts.append(f"{count} {noun} {status}")
    return ", ".join(parts)


# Why a key with a secret status is out, in a no-keys error.
_SECRET_TEXT = {
    SECRET_UNREADABLE: "secret cannot be decrypted with this instance's secret key: an admin "
    "must re-enter it",
    SECRET_INSECURE: "secret was saved under an empty secret key: an admin must re-enter it",
}


def _reset_text(keys: list) -> str:
    """`; resets at 00:00 Africa/Lagos` for the limits among `keys`."""
    resets = {limit_hit(k)[1] for k in keys}
    zone = periods.zone_name()
    texts = []
    if "day" in resets:
        texts.append(f"daily limits reset at 00:00 {zone}")
    if "month" in resets:
        texts.append(f"monthly limits on the 1st at 00:00 {zone}")
    return f"; {', '.join(texts)}" if texts else ""
