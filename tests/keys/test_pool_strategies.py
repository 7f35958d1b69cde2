"""Pool strategies `weighted` and `priority`, and the profile's default key (seed 003):
the order keys are tried in, then the same through the proxy."""

from __future__ import annotations

import dataclasses
import http.client
import json
import random
import time
from collections import Counter

import pytest

from gateway.keys.selection import MOST_REMAINING, PRIORITY, ROUND_ROBIN, WEIGHTED, order
from tests.conftest import MASTER_KEY, chat
from tests.fake_upstream import Behaviour
from tests.keys.test_selection import ids, key


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


@pytest.mark.both_databases
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


@pytest.mark.both_databases
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


def test_least_busy_sends_the_next_request_to_the_key_with_fewest_in_flight(
    admin, fake, server, client
):
    a, b = "sk-busy-a-aaaaaaaaaaaaaaaa", "sk-busy-b-bbbbbbbbbbbbbbbb"
    first = admin.add_key(a, fake.base_url, name="a")
    second = admin.add_key(b, fake.base_url, name="b")
    assert admin.call("PUT", "/profiles/default", {"strategy": "least-busy"}).status == 200
    fake.set_behaviour(a, Behaviour.slow(0.3, content="one two three four five"))
    fake.set_behaviour(b, Behaviour.slow(0.3, content="one two three four five"))
    # A stream held open on one key...
    host, port = server.url.removeprefix("http://").split(":")
    held = http.client.HTTPConnection(host, int(port), timeout=10)
    held.request(
        "POST",
        "/v1/chat/completions",
        json.dumps(chat(stream=True)),
        {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
    )
    stream = held.getresponse()
    assert stream.status == 200
    busy_secret = fake.requests[0].secret
    limiter = server.app.extensions["keyrelay"].limiter
    now = int(server.app.extensions["keyrelay"].clock.now().timestamp())
    busy_id = first["id"] if busy_secret == a else second["id"]
    assert limiter.window(f"pk:{busy_id}:busy", now).in_flight == 1
    # ...so the next request goes to the other one, whichever was first before.
    fake.set_behaviour(a, Behaviour.ok())
    fake.set_behaviour(b, Behaviour.ok())
    for _ in range(3):
        client.chat.completions.create(**chat())
    assert {r.secret for r in fake.requests[1:]} == {a, b} - {busy_secret}
    stream.read()
    held.close()
    deadline = time.monotonic() + 5
    while limiter.window(f"pk:{busy_id}:busy", now).in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert limiter.window(f"pk:{busy_id}:busy", now).in_flight == 0  # given back at the end


def test_a_routes_strategy_overrides_the_profiles(admin, fake, client):
    roomy, tight = "sk-route-roomy-aaaaaaaaaaaa", "sk-route-tight-bbbbbbbbbbbb"
    admin.add_key(roomy, fake.base_url, name="roomy", priority=1, daily_token_limit=1_000_000)
    admin.add_key(tight, fake.base_url, name="tight", priority=0, daily_token_limit=1_000)
    assert admin.call("PUT", "/profiles/default", {"strategy": "priority"}).status == 200
    body = {"name": "roomiest", "target": "gpt-4o-mini", "strategy": "most-remaining"}
    made = admin.call("POST", "/routes", body)
    assert made.status == 201 and made.json()["strategy"] == "most-remaining"

    def served_by(model: str) -> set[str]:
        """The key each of three requests tried first: the strategy's choice (a loaded
        machine may time an attempt out and fail over, which says nothing of the order)."""
        first = set()
        for _ in range(3):
            fake.reset()
            client.chat.completions.create(**chat(model=model))
            first.add(fake.requests[0].secret)
        return first

    assert served_by("gpt-4o-mini") == {tight}  # the profile's priority: tier 0
    assert served_by("roomiest") == {roomy}  # the route's most-remaining
    # Back to the profile's when the route's strategy is cleared.
    assert admin.call("PUT", f"/routes/{made.json()['id']}", {"strategy": None}).status == 200
    assert admin.call("GET", "/routes").json()["data"][0]["strategy"] is None
    assert served_by("roomiest") == {tight}
