"""Key selection (F21): strategies and effective status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.keys.selection import (
    MOST_REMAINING,
    ROUND_ROBIN,
    effective_status,
    order,
    unavailable_summary,
)
from gateway.store import KeyRow

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def key(id, limit=None, used=0, last_used=None, status="active", cooldown_until=None):
    return KeyRow(
        id,
        "openai",
        f"k{id}",
        "http://x",
        b"",
        ["*"],
        None,
        limit,
        status,
        cooldown_until,
        0,
        last_used,
        used,
    )


def ids(keys):
    return [k.id for k in keys]


def test_most_remaining_prefers_the_most_tokens_left():
    keys = [key(1, limit=1000, used=900), key(2, limit=1000, used=100), key(3, limit=500)]
    assert ids(order(keys, MOST_REMAINING, {})) == [2, 3, 1]


def test_unlimited_keys_have_the_most_room():
    assert ids(order([key(1, limit=10**9), key(2)], MOST_REMAINING, {})) == [2, 1]


def test_ties_go_to_the_least_recently_used():
    keys = [key(1, last_used=NOW), key(2, last_used=NOW - timedelta(hours=1)), key(3)]
    assert ids(order(keys, MOST_REMAINING, {})) == [3, 2, 1]


def test_round_robin_rotates_by_last_use_including_requests_in_flight():
    keys = [key(1), key(2), key(3)]
    picked = {1: NOW}
    assert ids(order(keys, ROUND_ROBIN, picked)) == [2, 3, 1]
    picked[2] = NOW + timedelta(seconds=1)
    assert ids(order(keys, ROUND_ROBIN, picked)) == [3, 1, 2]


def test_round_robin_ignores_remaining_quota():
    keys = [key(1, limit=100, used=99, last_used=NOW - timedelta(hours=2)), key(2, last_used=NOW)]
    assert ids(order(keys, ROUND_ROBIN, {})) == [1, 2]


def test_effective_status():
    assert effective_status(key(1, status="cooling_down", cooldown_until=NOW), NOW) == "active"
    later = NOW + timedelta(seconds=1)
    assert effective_status(key(1, status="cooling_down", cooldown_until=later), NOW) == (
        "cooling_down"
    )
    assert effective_status(key(1, limit=10, used=10), NOW) == "limit_reached"
    assert effective_status(key(1, limit=10, used=9), NOW) == "active"
    assert effective_status(key(1, status="disabled", limit=10, used=10), NOW) == "disabled"


def test_unavailable_summary_names_counts_and_times():
    keys = [
        key(1, status="cooling_down", cooldown_until=NOW + timedelta(seconds=70)),
        key(2, status="cooling_down", cooldown_until=NOW + timedelta(seconds=10)),
        key(3, status="auth_failed"),
        key(4, limit=5, used=5),
    ]
    assert unavailable_summary(keys, NOW) == (
        "1 key auth_failed, 2 keys cooling down until 12:00:10 UTC, "
        "1 key at a limit (daily token limit; daily limits reset at 00:00 UTC)"
    )
