"""Failover (F22, F23): each upstream failure's effect on the key and on the request."""

from __future__ import annotations

import socket
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import openai
import pytest

from tests.fake_upstream import Behaviour

A, B, C, D = (f"sk-key{n}-0000000000000000{n}" for n in "abcd")


@pytest.fixture
def keys(admin, fake):
    """Three keys, tried in id order (equal quota, none used yet)."""
    return [admin.add_key(secret, fake.base_url, name=secret[3:7]) for secret in (A, B, C)]


def ask(client, **extra):
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], **extra
    )


def used_secrets(fake) -> list[str]:
    return [r.secret for r in fake.requests]


def test_429_with_retry_after_cools_the_key_down_for_that_long(client, admin, fake, keys, clock):
    fake.script(A, [Behaviour.rate_limited(retry_after=7)])
    raw = ask(client)
    assert raw.headers["x-keyrelay-attempts"] == "2"
    assert used_secrets(fake) == [A, B]
    key = admin.key(keys[0]["id"])
    assert key["status"] == "cooling_down"
    assert key["cooldown_until"] == (clock.now() + timedelta(seconds=7)).isoformat()
    assert key["consecutive_failures"] == 0


def test_429_without_retry_after_cools_down_for_the_default(client, admin, fake, keys, clock):
    fake.script(A, [Behaviour.rate_limited()])
    ask(client)
    key = admin.key(keys[0]["id"])
    assert key["cooldown_until"] == (clock.now() + timedelta(seconds=60)).isoformat()


def test_cooldown_expires_when_the_clock_passes_it(client, admin, fake, keys, clock):
    fake.script(A, [Behaviour.rate_limited(retry_after=30)])
    ask(client)
    fake.reset()
    ask(client)  # A is still cooling down: B (least recently used of B, C... ) or C serves
    assert A not in used_secrets(fake)
    clock.advance(seconds=31)
    fake.reset()
    for _ in range(3):
        ask(client)
    assert A in used_secrets(fake)
    assert admin.key(keys[0]["id"])["status"] == "active"


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_count_a_failure_and_fail_over(client, admin, fake, keys, status):
    fake.script(A, [Behaviour.server_error(status)])
    raw = ask(client)
    assert raw.parse().choices[0].message.content
    assert used_secrets(fake) == [A, B]
    key = admin.key(keys[0]["id"])
    assert key["consecutive_failures"] == 1
    assert key["status"] == "active"
    assert str(status) in key["last_error"]


@pytest.mark.both_databases
@pytest.mark.parametrize("behaviour", [Behaviour.unauthorized(), Behaviour.forbidden()])
def test_401_and_403_mark_the_key_auth_failed(client, admin, fake, keys, behaviour):
    fake.set_behaviour(A, behaviour)
    ask(client)
    assert used_secrets(fake) == [A, B]
    assert admin.key(keys[0]["id"])["status"] == "auth_failed"
    fake.reset()
    for _ in range(4):
        ask(client)
    assert A not in used_secrets(fake)


def test_timeout_fails_over(client, admin, fake, keys):
    fake.set_behaviour(A, Behaviour.hang())
    raw = ask(client)
    assert raw.headers["x-keyrelay-attempts"] == "2"
    key = admin.key(keys[0]["id"])
    assert key["consecutive_failures"] == 1
    assert "timed out" in key["last_error"]


def test_unreachable_upstream_fails_over(client, admin, fake):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    dead = admin.add_key(A, f"http://127.0.0.1:{dead_port}/v1")
    admin.add_key(B, fake.base_url)
    raw = ask(client)
    assert raw.headers["x-keyrelay-attempts"] == "2"
    assert "connection" in admin.key(dead["id"])["last_error"]


def test_malformed_answer_fails_over(client, admin, fake, keys):
    fake.script(A, [Behaviour.malformed()])
    assert ask(client).headers["x-keyrelay-attempts"] == "2"
    assert admin.key(keys[0]["id"])["consecutive_failures"] == 1


def test_400_goes_back_to_the_client_without_failover(client, admin, fake, keys):
    fake.set_behaviour(A, Behaviour.bad_request("max_tokens is too large", code="invalid_value"))
    with pytest.raises(openai.BadRequestError) as err:
        ask(client)
    assert "max_tokens is too large" in err.value.message
    assert used_secrets(fake) == [A]
    assert err.value.response.headers["x-keyrelay-attempts"] == "1"
    key = admin.key(keys[0]["id"])
    assert key["status"] == "active" and key["consecutive_failures"] == 0


def test_attempts_are_bounded(client, admin, fake, keys):
    admin.add_key(D, fake.base_url)
    for secret in (A, B, C, D):
        fake.set_behaviour(secret, Behaviour.server_error())
    with pytest.raises(openai.APIStatusError) as err:
        ask(client)
    assert err.value.status_code == 502
    assert len(fake.requests) == 3
    assert "All 3 attempts" in err.value.message


def test_all_keys_rate_limited_is_429_with_retry_after(client, fake, keys):
    for secret, wait in ((A, 20), (B, 5), (C, 9)):
        fake.set_behaviour(secret, Behaviour.rate_limited(retry_after=wait))
    with pytest.raises(openai.RateLimitError) as err:
        ask(client)
    assert err.value.response.headers["retry-after"] == "5"


def test_last_attempt_timing_out_is_504(client, admin, fake):
    admin.add_key(A, fake.base_url)
    fake.set_behaviour(A, Behaviour.hang())
    with pytest.raises(openai.APIStatusError) as err:
        ask(client)
    assert err.value.status_code == 504


def test_deadline_bounds_the_whole_request(settings, fake, request):
    settings.update(REQUEST_DEADLINE=1.5, READ_TIMEOUT=1.0)
    admin, client = request.getfixturevalue("admin"), request.getfixturevalue("client")
    for secret in (A, B, C):
        admin.add_key(secret, fake.base_url)
        fake.set_behaviour(secret, Behaviour.hang())
    with pytest.raises(openai.APIStatusError) as err:
        ask(client)
    assert err.value.status_code == 504
    assert len(fake.requests) == 2  # 1.0 s + 0.5 s used the 1.5 s deadline


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_trickles_is_cut_at_the_deadline_and_the_next_key_serves(
    settings, fake, request, stream
):
    """An answer that never goes silent for a read timeout, but would take ~30 s whole (a
    stream: its first event), times out as a whole: the next key answers in time."""
    settings.update(REQUEST_DEADLINE=6.0, READ_TIMEOUT=1.5)
    admin, client = request.getfixturevalue("admin"), request.getfixturevalue("client")
    trickler = admin.add_key(A, fake.base_url)
    admin.add_key(B, fake.base_url)
    fake.set_behaviour(A, Behaviour.trickle(every=0.1, content="word " * 60))
    started = time.monotonic()
    if stream:
        raw = ask(client, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        raw = ask(client)
        text = raw.parse().choices[0].message.content
    assert time.monotonic() - started < 10  # the trickle alone would take ~30 s
    assert text == "Hello from the fake upstream"
    assert raw.headers["x-keyrelay-attempts"] == "2"
    assert used_secrets(fake) == [A, B]
    key = admin.key(trickler["id"])
    assert "timed out" in key["last_error"] and key["consecutive_failures"] == 1


def test_no_available_keys_says_why_and_until_when(client, admin, fake, keys, clock):
    for secret in (A, B, C):
        fake.set_behaviour(secret, Behaviour.rate_limited(retry_after=250))
    with pytest.raises(openai.RateLimitError):
        ask(client)
    with pytest.raises(openai.APIStatusError) as err:
        ask(client)
    until = (clock.now() + timedelta(seconds=250)).strftime("%H:%M:%S")
    assert err.value.status_code == 503
    assert err.value.body["message"] == (
        f"No available keys for profile default: 3 keys cooling down until {until} UTC."
    )
    assert err.value.response.headers["retry-after"] == "250"


@pytest.mark.both_databases
def test_five_consecutive_failures_disable_the_key(client, admin, fake, keys):
    fake.set_behaviour(A, Behaviour.server_error())
    for _ in range(5):
        # Pin A first each time: B and C are disabled by the admin meanwhile.
        admin.call("POST", f"/keys/{keys[1]['id']}/toggle", {"active": False})
        admin.call("POST", f"/keys/{keys[2]['id']}/toggle", {"active": False})
        with pytest.raises(openai.APIStatusError):
            ask(client)
    key = admin.key(keys[0]["id"])
    assert key["status"] == "disabled"
    assert key["consecutive_failures"] == 5


def test_a_success_ends_the_failure_streak(client, admin, fake):
    key = admin.add_key(A, fake.base_url)
    fake.script(A, [Behaviour.server_error()] * 4)
    for _ in range(4):
        with pytest.raises(openai.APIStatusError):
            ask(client)
    assert admin.key(key["id"])["consecutive_failures"] == 4
    ask(client)
    assert admin.key(key["id"])["consecutive_failures"] == 0
    assert admin.key(key["id"])["status"] == "active"


def test_stream_fails_over_before_its_first_byte(client, admin, fake, keys):
    fake.script(A, [Behaviour.server_error()])
    fake.script(B, [Behaviour.hang()])
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "Hello from the fake upstream"
    assert used_secrets(fake) == [A, B, C]


def test_stream_cut_after_its_first_byte_is_not_retried(client, admin, fake, keys):
    fake.set_behaviour(A, Behaviour.cut(after_events=2))
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Hello from"
    assert "broke" in str(err.value)
    assert used_secrets(fake) == [A]
    (log,) = admin.logs()
    assert log["status_code"] == 502
    assert log["usage_estimated"] is True
    assert log["output_tokens"] > 0


@pytest.mark.both_databases
def test_failed_attempts_are_in_the_log(client, admin, fake, keys):
    fake.script(A, [Behaviour.rate_limited(retry_after=3)])
    fake.script(B, [Behaviour.server_error()])
    raw = ask(client)
    (log,) = admin.logs()
    assert log["request_id"] == raw.headers["x-keyrelay-request-id"]
    assert [(a["provider_key_id"], a["outcome"], a["status_code"]) for a in log["attempts"]] == [
        (keys[0]["id"], "rate_limited", 429),
        (keys[1]["id"], "server_error", 500),
        (keys[2]["id"], "ok", 200),
    ]
    assert log["provider_key_id"] == keys[2]["id"]


def test_no_secret_in_server_logs(client, admin, fake, keys, caplog):
    fake.set_behaviour(A, Behaviour.unauthorized())
    fake.script(B, [Behaviour.server_error()])
    ask(client)
    text = caplog.text + str(admin.logs()) + str(admin.call("GET", "/keys").json())
    for secret in (A, B, C):
        assert secret not in text


@pytest.fixture
def quick_busy_timeout(settings):
    """A write waits 0.2 s for another process's lock (asked for before the app is made)."""
    settings["DB_BUSY_TIMEOUT"] = 0.2
    return settings


@pytest.mark.sqlite_only  # SQLite's write lock held from outside
def test_a_failure_on_a_write_locked_database_still_fails_over(
    quick_busy_timeout, client, admin, fake, keys
):
    """Key A fails while another process holds the database's write lock past the busy
    timeout: A's failure cannot be written, and the request goes on to B all the same;
    its log row is written once the lock is gone."""
    settings = quick_busy_timeout
    fake.script(A, [Behaviour.server_error(500)])
    locker = sqlite3.connect(Path(settings["INSTANCE_PATH"]) / "keyrelay.db", isolation_level=None)
    try:
        locker.execute("BEGIN IMMEDIATE")
        raw = ask(client)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert raw.http_response.status_code == 200
    assert used_secrets(fake) == [A, B]
    (row,) = admin.logs()
    assert row["request_id"] == raw.headers["x-keyrelay-request-id"]
    assert row["status_code"] == 200
