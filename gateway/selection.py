"""Which provider keys may serve a request, and in which order to try them."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from gateway.store import KeyRow
from models.provider_keys import ACTIVE, COOLING_DOWN, LIMIT_REACHED

MOST_REMAINING = "most-remaining"
ROUND_ROBIN = "round-robin"
STRATEGIES = (MOST_REMAINING, ROUND_ROBIN)
_EPOCH = datetime.min.replace(tzinfo=UTC)


def effective_status(key: KeyRow, now: datetime) -> str:
    """The status that counts now: expired cooldowns are over, exhausted quotas are out."""
    status = key.status
    if status == COOLING_DOWN and (key.cooldown_until is None or key.cooldown_until <= now):
        status = ACTIVE
    limit = key.daily_token_limit
    if status == ACTIVE and limit is not None and key.used_today >= limit:
        return LIMIT_REACHED
    return status


def remaining_today(key: KeyRow) -> float:
    """Tokens left under the daily limit; unlimited keys have all the room there is."""
    if key.daily_token_limit is None:
        return float("inf")
    return key.daily_token_limit - key.used_today


def order(keys: list[KeyRow], strategy: str, picked_at: dict[int, datetime]) -> list[KeyRow]:
    """Sort usable keys by the strategy; `picked_at` spreads requests already in flight."""

    def last_used(key: KeyRow) -> datetime:
        return max(key.last_used_at or _EPOCH, picked_at.get(key.id, _EPOCH))

    if strategy == ROUND_ROBIN:
        return sorted(keys, key=lambda k: (last_used(k), k.id))
    return sorted(keys, key=lambda k: (-remaining_today(k), last_used(k), k.id))


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
            parts.append(f"{count} {noun} at the daily token limit (resets at 00:00 UTC)")
        else:
            parts.append(f"{count} {noun} {status}")
    return ", ".join(parts)
