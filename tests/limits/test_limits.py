"""Client-key rate limits (F31, F7): RPM and TPM on a sliding 60 s window and requests in
flight, shared by every worker process through the memory-mapped limiter."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import openai
import pytest

from gateway.limits.local import Limits, SharedLimiter
from tests.conftest import chat
from tests.fake_upstream import Behaviour

SECRET = "sk-limits-aaaaaaaaaaaaaaaa1111"
T0 = 1_800_000_000


def test_requests_per_minute_slide(tmp_path):
    limiter = SharedLimiter(tmp_path / "limits.bin")
    limits = Limits(rpm=3)
    for second in (T0, T0 + 10, T0 + 20):
        window, refusal = limiter.admit("ck:1", limits, second)
        assert refusal is None
    assert (window.requests, window.requests_reset) == (3, 40)
    _, refusal = limiter.admit("ck:1", limits, T0 + 30)
    assert (refusal.reason, refusal.retry_after) == ("rpm", 30)  # T0's request leaves at T0+60
    assert limiter.admit("ck:1", limits, T0 + 59)[1].retry_after == 1
    assert limiter.admit("ck:1", limits, T0 + 60)[1] is None  # one aged out, one came in
    assert limiter.admit("ck:1", limits, T0 + 60)[1].reason == "rpm"
    assert limiter.admit("ck:2", limits, T0 + 60)[1] is None  # scopes are separate
    assert limiter.window("ck:1", T0 + 200).requests == 0


def test_tokens_per_minute_count_settled_tokens(tmp_path):
    limiter = SharedLimiter(tmp_path / "limits.bin")
    limits = Limits(tpm=150)
    assert limiter.admit("ck:1", limits, T0)[1] is None
    limiter.settle("ck:1", 100, T0, parallel=False)
    assert limiter.admit("ck:1", limits, T0 + 5)[1] is None  # 100 < 150: admitted
    limiter.settle("ck:1", 60, T0 + 5, parallel=False)
    window, refusal = limiter.admit("ck:1", limits, T0 + 6)
    assert (refusal.reason, refusal.retry_after, window.tokens) == ("tpm", 54, 160)
    assert limiter.admit("ck:1", limits, T0 + 60)[1] is None  # the first 100 aged out


def _admit_in_child(path: str, scope: str, parallel: int | None, settle: bool, out) -> None:
    limiter = SharedLimiter(Path(path))
    window, refusal = limiter.admit(scope, Limits(rpm=3, parallel=parallel), T0)
    out.put((os.getpid(), None if refusal is None else refusal.reason, window.requests))
    if settle:
        limiter.settle(scope, 0, T0, parallel=parallel is not None)


def _child(path, scope, parallel=None, settle=True):
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(
        target=_admit_in_child, args=(str(path), scope, parallel, settle, out)
    )
    process.start()
    result = out.get(timeout=30)
    process.join(30)
    return result


def test_workers_share_one_window(tmp_path):
    """Another process (a second gunicorn worker) counts in the same window."""
    path = tmp_path / "limits.bin"
    limiter = SharedLimiter(path)
    assert limiter.admit("ck:1", Limits(rpm=3), T0)[1] is None
    _, reason, seen = _child(path, "ck:1")
    assert (reason, seen) == (None, 2)
    assert limiter.admit("ck:1", Limits(rpm=3), T0)[1] is None
    assert limiter.admit("ck:1", Limits(rpm=3), T0)[1].reason == "rpm"
    _, reason, _ = _child(path, "ck:1")
    assert reason == "rpm"


def test_a_dead_workers_requests_in_flight_are_given_back(tmp_path):
    path = tmp_path / "limits.bin"
    limiter = SharedLimiter(path)
    pid, reason, _ = _child(path, "ck:9", parallel=1, settle=False)  # exits holding its place
    assert reason is None
    window, refusal = limiter.admit("ck:9", Limits(parallel=1), T0 + 1)
    assert refusal is None and window.in_flight == 1  # the dead pid's place was dropped
    _, refusal = limiter.admit("ck:9", Limits(parallel=1), T0 + 1)
    assert refusal.reason == "parallel"  # but a live holder keeps it
    limiter.settle("ck:9", 0, T0 + 2, parallel=True)
    assert limiter.admit("ck:9", Limits(parallel=1), T0 + 2)[1] is None
    assert pid != os.getpid()


def test_a_file_of_another_layout_is_started_afresh(tmp_path):
    path = tmp_path / "limits.bin"
    path.write_bytes(b"not a limiter file")
    assert SharedLimiter(path).admit("ck:1", Limits(rpm=1), T0)[1] is None


# -- through the proxy -------------------------------------------------------------------


@pytest.fixture
def provider(admin, fake):
    admin.add_key(SECRET, fake.base_url, name="main")


def client_key(admin, **limits) -> str:
    response = admin.call("POST", "/client-keys", {"name": "app", **limits})
    assert response.status == 201, response.data
    return response.json()["key"]


def sdk(server, key):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)


def test_rpm_limit_answers_429_with_retry_after_and_headers(admin, server, provider, clock):
    key = client_key(admin, rpm_limit=2, tpm_limit=None)
    client = sdk(server, key)
    first = client.chat.completions.with_raw_response.create(**chat())
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "60s"
    assert "x-ratelimit-limit-tokens" not in first.headers
    second = client.chat.completions.with_raw_response.create(**chat())
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    clock.advance(seconds=15)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat())
    assert refused.value.response.headers["Retry-After"] == "45"
    assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.value.body["code"] == "rate_limit_exceeded"
    assert "2 requests per minute" in refused.value.body["message"]
    [log] = admin.logs(limit=1)
    assert (log["status_code"], log["client_key_id"], log["attempts"]) == (429, 1, [])
    clock.advance(seconds=45)
    client.chat.completions.create(**chat())
    # The master key is never limited.
    master = sdk(server, "kr-test-master-key").chat.completions.with_raw_response.create(**chat())
    assert "x-ratelimit-limit-requests" not in master.headers


def test_the_limits_refusal_answers_before_anything_the_routing_finds(admin, server, fake):
    """The window's answer is read just before the upstream call (so a Redis round trip
    overlaps the routing), yet the client key's 429 still answers first: a request over
    its limit that no key could serve is refused as over the limit, and one that a key
    could serve never reaches the upstream."""
    client = sdk(server, client_key(admin, rpm_limit=1, tpm_limit=None))
    with pytest.raises(openai.APIStatusError) as unserved:
        client.chat.completions.create(**chat())  # no provider key yet; takes the place
    assert unserved.value.status_code == 404
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat())
    assert refused.value.body["code"] == "rate_limit_exceeded"
    assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    admin.add_key(SECRET, fake.base_url, name="main")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**chat())
    assert fake.requests == []
    statuses = [log["status_code"] for log in admin.logs(limit=3)]
    assert statuses == [429, 429, 404]


def test_tpm_limit_counts_the_tokens_used(admin, server, provider, clock):
    key = client_key(admin, rpm_limit=None, tpm_limit=10)
    client = sdk(server, key)
    used = client.chat.completions.create(**chat()).usage.total_tokens
    assert 0 < used < 10  # the fake's answer: the first two requests fit, a third does not
    second = client.chat.completions.with_raw_response.create(**chat())
    assert second.headers["x-ratelimit-remaining-tokens"] == str(10 - used)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat())
    assert "10 tokens per minute" in refused.value.body["message"]
    clock.advance(seconds=60)
    streamed = client.chat.completions.create(**chat(), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)


def test_parallel_limit_holds_a_place_until_the_answer_is_done(admin, server, provider, fake):
    key = client_key(admin, max_parallel_requests=1)
    client = sdk(server, key)
    fake.set_behaviour(SECRET, Behaviour.slow(0.8))
    results = []
    slow = threading.Thread(target=lambda: results.append(client.chat.completions.create(**chat())))
    slow.start()
    deadline = time.monotonic() + 5
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat())
    assert "1 requests at a time" in refused.value.body["message"]
    slow.join(10)
    assert results
    fake.set_behaviour(SECRET, Behaviour.ok())
    client.chat.completions.create(**chat())  # the place was given back
    # A stream keeps its place until its last event, then gives it back.
    fake.set_behaviour(SECRET, Behaviour.slow(0.2))  # a pause before each event
    stream = client.chat.completions.create(**chat(), stream=True)
    next(iter(stream))
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(**chat())
    for _ in stream:
        pass
    fake.set_behaviour(SECRET, Behaviour.ok())
    client.chat.completions.create(**chat())


def test_new_keys_take_the_configured_defaults(admin, settings):
    created = admin.call("POST", "/client-keys", {"name": "d"}).json()
    assert (created["rpm_limit"], created["tpm_limit"], created["max_parallel_requests"]) == (
        100,
        10000,
        None,
    )
    unlimited = admin.call("POST", "/client-keys", {"name": "u", "rpm_limit": None}).json()
    assert unlimited["rpm_limit"] is None and unlimited["tpm_limit"] == 10000
    bad = admin.call("POST", "/client-keys", {"name": "b", "tpm_limit": 0})
    assert bad.status == 400 and bad.json()["error"]["param"] == "tpm_limit"
    changed = admin.call("PUT", f"/client-keys/{created['id']}", {"rpm_limit": 5}).json()
    assert changed["rpm_limit"] == 5


@pytest.mark.both_databases
def test_dashboard_form_sets_limits(web):
    page = web.get("/client-keys").text
    assert 'name="rpm_limit" value="100"' in page and 'name="tpm_limit" value="10000"' in page
    created = web.post(
        "/client-keys",
        {"name": "lim", "profile": "default", "models": "*", "rpm_limit": "7", "tpm_limit": ""},
        follow_redirects=True,
    ).text
    assert "7 rpm · ∞ tpm · ∞ at a time" in created
    bad = web.post("/client-keys", {"name": "x", "max_parallel_requests": "many"})
    assert bad.status_code == 422
    assert 'name="max_parallel_requests" value="many"' in bad.text
