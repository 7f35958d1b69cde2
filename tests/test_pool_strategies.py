"""Pool strategies `weighted` and `priority`, and the profile's default key (seed 003):
the order keys are tried in, then the same through the proxy."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

from gateway.selection import MOST_REMAINING, PRIORITY, ROUND_ROBIN, WEIGHTED, order
from tests.conftest import chat
from tests.test_selection import ids, key


def weighted(id, weight):
    return dataclasses.replace(key(id), weight=weight)


def test_weighted_puts_keys_first_in_proportion_to_their_weights():
    keys = [weighted(1, 1), weighted(2, 3), weighted(3, 6)]
    rng = random.Random(7)
    firsts = Counter(order(keys, WEIGHTED, {}, rng)[0].id for _ in range(10_000))
    assert abs(firsts[1] / 10_000 - 0.1) < 0.02
    assert abs(firsts[2] / 10_000 - 0.3) < 0.02
    assert abs(firsts[3] / 10_000 - 0.6) < 0.02
    assert sorted(ids(order(keys, WEIGHTED, {}, rng))) == [1, 2, 3]  # every key, once


def test_priority_tries_a_lower_tier_only_after_the_higher():
    tiered = [
        dataclasses.replace(key(1, limit=1000, used=900), priority=1),
        dataclasses.replace(key(2, limit=1000, used=0), priority=2),
        dataclasses.replace(key(3, limit=1000, used=500), priority=1),
        dataclasses.replace(key(4), priority=None),  # no tier: the first (0)
    ]
    assert ids(order(tiered, PRIORITY, {})) == [4, 3, 1, 2]
    usable = [k for k in tiered if k.id in (2, 3)]  # tier 0 and one of tier 1 unusable
    assert ids(order(usable, PRIORITY, {})) == [3, 2]


def test_the_default_key_comes_first_in_every_strategy():
    keys = [key(1, limit=1000, used=0), dataclasses.replace(key(2, 1000, 999), is_default=True)]
    for strategy in (MOST_REMAINING, ROUND_ROBIN, WEIGHTED, PRIORITY):
        assert order(keys, strategy, {})[0].id == 2, strategy


def test_set_default_through_the_api_and_the_proxy(admin, fake, client):
    first = admin.add_key("sk-pool-first-aaaaaaaaaaaaa", fake.base_url, name="first")
    second = admin.add_key("sk-pool-second-bbbbbbbbbbbb", fake.base_url, name="second")
    answer = admin.call("POST", f"/keys/{second['id']}/set-default")
    assert answer.status == 200 and answer.json()["is_default"] is True
    assert admin.call("GET", "/keys/active").json()["id"] == second["id"]
    for _ in range(3):
        client.chat.completions.create(**chat())
    assert {r.secret for r in fake.requests} == {"sk-pool-second-bbbbbbbbbbbb"}
    # Another default: the first one loses it.
    admin.call("POST", f"/keys/{first['id']}/set-default")
    assert admin.key(second["id"])["is_default"] is False
    assert admin.call("GET", "/keys/active").json()["id"] == first["id"]
    # A default that cannot serve is passed over.
    admin.call("POST", f"/keys/{first['id']}/toggle")
    assert admin.call("GET", "/keys/active").json()["id"] == second["id"]


def test_weights_and_tiers_through_the_api(admin, fake, client):
    made = admin.add_key("sk-pool-w-aaaaaaaaaaaaaaa", fake.base_url, weight=5, priority=2)
    assert (made["weight"], made["priority"]) == (5, 2)
    for body, field in (({"weight": 0}, "weight"), ({"priority": 101}, "priority")):
        refused = admin.call("PUT", f"/keys/{made['id']}", body)
        assert refused.status == 400 and refused.json()["error"]["param"] == field
    low = admin.add_key("sk-pool-low-bbbbbbbbbbbbbb", fake.base_url, priority=1)
    profile = admin.call("PUT", "/profiles/default", {"strategy": "priority"})
    assert profile.status == 200, profile.data
    client.chat.completions.create(**chat())
    assert fake.requests[-1].secret == "sk-pool-low-bbbbbbbbbbbbbb"  # tier 1 before tier 2
    assert low["priority"] == 1
