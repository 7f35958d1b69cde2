"""Accounting (F40, F41, P4): every request logged once, with the tokens the upstream reported."""

from __future__ import annotations

import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from gateway import tokens
from tests.conftest import MASTER_KEY
from tests.fake_upstream import DEFAULT_CONTENT, Behaviour

SECRETS = [f"sk-acct-00000000000000{n}" for n in range(3)]

# Roll-ups, batched inserts and reports: the same on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_databases


@pytest.fixture
def keys(admin, fake):
    return [admin.add_key(secret, fake.base_url) for secret in SECRETS]


def one_request(base_url: str, seed: int) -> int:
    """A chat request, streamed or not; returns the tokens the client saw in usage."""
    rng = random.Random(seed)
    sdk = openai.OpenAI(base_url=base_url, api_key=MASTER_KEY, max_retries=0)
    messages = [{"role": "user", "content": "word " * rng.randint(1, 200)}]
    try:
        if rng.random() < 0.5:
            return sdk.chat.completions.create(
                model="gpt-4o-mini", messages=messages
            ).usage.total_tokens
        stream = sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        return [chunk for chunk in stream][-1].usage.total_tokens
    finally:
        sdk.close()


@pytest.fixture
def patient(settings):
    """No timeouts under load: a failover would make the upstream count a request twice."""
    settings.update(READ_TIMEOUT=60.0, REQUEST_DEADLINE=120.0)


def test_sums_equal_upstream_usage_after_32_concurrent_clients(patient, server, admin, fake, keys):
    with ThreadPoolExecutor(max_workers=32) as pool:
        seen = list(pool.map(lambda n: one_request(f"{server.url}/v1", n), range(128)))
    reported = sum(usage["total_tokens"] for usage in fake.usage_reported)
    assert len(fake.usage_reported) == 128
    assert sum(seen) == reported
    stats = admin.stats()["all_time"]
    assert stats["requests"] == 128 and stats["successes"] == 128
    assert stats["total_tokens"] == reported
    assert stats["input_tokens"] == sum(u["prompt_tokens"] for u in fake.usage_reported)
    assert stats["estimated_tokens"] == 0
    logs = admin.logs(limit=500)
    assert len(logs) == 128
    assert sum(log["total_tokens"] for log in logs) == reported
    used = sum(admin.key(key["id"])["used_today"] for key in keys)
    assert used == reported


def test_missing_usage_is_estimated_and_marked(client, admin, fake, keys):
    for secret in SECRETS:
        fake.set_behaviour(secret, Behaviour.ok(usage=False))
    messages = [{"role": "user", "content": "How many tokens is this?"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    for log in admin.logs():
        assert log["usage_estimated"] is True
        assert log["output_tokens"] == tokens.count_text(DEFAULT_CONTENT)
        assert log["input_tokens"] == tokens.count_prompt(messages)
    assert admin.stats()["all_time"]["estimated_tokens"] == 2 * log["total_tokens"]


def test_stream_usage_is_counted_once(client, admin, fake, keys):
    list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    (log,) = admin.logs()
    (usage,) = fake.usage_reported
    assert (log["input_tokens"], log["output_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    assert log["usage_estimated"] is False and log["streamed"] is True
    assert log["ttft_ms"] is not None
    assert admin.stats()["all_time"]["total_tokens"] == usage["total_tokens"]


def wait_for_logs(admin, count: int, timeout: float = 5.0) -> list[dict]:
    """The server books an abandoned stream when it notices; wait for that, bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = admin.logs()
        if len(logs) >= count:
            return logs
        time.sleep(0.05)
    raise AssertionError(f"expected {count} log rows, found {len(admin.logs())}")


def test_client_that_disconnects_is_counted_by_the_tokenizer(server, admin, fake, keys):
    content = "one two three four five six seven eight"
    for secret in SECRETS:
        fake.set_behaviour(secret, Behaviour.slow(delay=0.2, content=content))
    body = (
        b'{"model":"gpt-4o-mini","stream":true,'
        b'"messages":[{"role":"user","content":"count to eight"}]}'
    )
    with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {MASTER_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        received = b""
        while received.count(b"data: ") < 3:
            received += sock.recv(65536)
    (log,) = wait_for_logs(admin, 1)
    assert log["status_code"] == 499
    assert log["usage_estimated"] is True
    assert 1 <= log["output_tokens"] < tokens.count_text(content)
    assert log["input_tokens"] == tokens.count_prompt(
        [{"role": "user", "content": "count to eight"}]
    )
    assert admin.stats()["all_time"]["total_tokens"] == log["total_tokens"]


def test_failed_requests_are_logged_but_not_billed(client, admin, fake, keys):
    for secret in SECRETS:
        fake.set_behaviour(secret, Behaviour.server_error())
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    (log,) = admin.logs()
    assert log["status_code"] == 502 and log["total_tokens"] == 0
    stats = admin.stats()["all_time"]
    assert (stats["requests"], stats["failures"], stats["success_rate"]) == (1, 1, 0.0)


def test_request_ids_sort_by_the_time_they_were_made():
    import re
    import time

    from gateway.ledger.accounting import new_request_id

    first = new_request_id()
    time.sleep(0.002)  # the id's clock is the wall clock, in milliseconds
    later = [new_request_id() for _ in range(50)]
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in [first, *later])
    assert all(first < i for i in later)  # the unique index takes them at its right edge
    assert len(set(later)) == 50
