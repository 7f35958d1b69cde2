"""RPM windows survive Redis losing them (a restart, a flush): the windows of the last
minute are rebuilt from the request log before anything more is admitted."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import chat
from tests.limits.test_budgets import SECRET, budget_key, sdk
from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def settings(settings, redis_server):
    return {**settings, "REDIS_URL": redis_server.url}


def admitted(client, count: int) -> int:
    served = 0
    for _ in range(count):
        try:
            client.chat.completions.create(**chat(), max_tokens=5)
            served += 1
        except openai.RateLimitError as exc:
            assert exc.body["code"] == "rate_limit_exceeded"
    return served


def test_an_rpm_window_survives_a_redis_restart_and_a_flush(
    app, admin, server, fake, clock, redis_server
):
    admin.add_key(SECRET, fake.base_url, name="main")
    created = budget_key(admin, rpm_limit=20)
    client = sdk(server, created["key"])
    assert admitted(client, 20) == 20
    limiter = app.extensions["keyrelay"].limiter
    limiter.flush()  # nothing of ours is left to send while Redis is away
    redis_server.stop()
    redis_server.start()  # empty: no persistence
    assert admitted(client, 15) == 0  # still the same minute (the clock stands still)
    redis_server.client().flushall()
    assert admitted(client, 15) == 0
    clock.advance(seconds=61)  # a new minute: the key has its 20 again
    assert admitted(client, 21) == 20
