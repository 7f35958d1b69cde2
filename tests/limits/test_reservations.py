"""Budget reservations (issue 10, item 4): bad answer lengths are refused before anything
is reserved, and every reservation is given back on every path (an upstream error, an
exception, a client that goes away, a stream never read)."""

from __future__ import annotations

import http.client
import json
import socket
import time

import openai
import pytest

from gateway.keys.client_keys import Caller
from gateway.limits import budgets
from tests.conftest import chat
from tests.fake_upstream import Behaviour

# The budget tests' key, prices (1000 micro-dollars per token) and helpers.
from tests.limits.test_budgets import SECRET, budget_key, priced, sdk  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("priced")


def ledger(server, key: str) -> tuple[int, int]:
    """(spent, reserved) micro-dollars of the key's current budget period, as shared by
    every worker."""
    gateway = server.app.extensions["keyrelay"]
    caller: Caller = gateway.callers.resolve(key)
    start, _ = budgets.period(caller.budget.anchor, caller.budget.duration, gateway.clock.now())
    scope = f"ck:{caller.client_key_id}:budget"
    spent, reserved, _ = gateway.limiter.reserve(
        scope, int(start.timestamp()), caller.budget.micros, 0, lambda: 0
    )
    return spent, reserved


def wait_for(predicate, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", -1_000_000),
        ("max_tokens", 0),
        ("max_completion_tokens", -5),
        ("max_tokens", 10**12),
        ("max_tokens", 1.5),
        ("max_tokens", "100"),
        ("n", 0),
        ("n", 10_000),
    ],
)
def test_bad_answer_lengths_are_refused_before_any_reservation(admin, server, fake, field, value):
    created = budget_key(admin, max_budget="10.00")
    client = sdk(server, created["key"])
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**chat(), extra_body={field: value})
    assert refused.value.body["param"] == field
    assert fake.requests == []  # the upstream never saw it
    assert ledger(server, created["key"]) == (0, 0)  # nothing reserved, nothing left behind
    client.chat.completions.create(**chat(), max_tokens=5)  # the key still works
    assert ledger(server, created["key"])[1] == 0


@pytest.mark.both_databases
def test_an_upstream_error_gives_the_reservation_back(admin, server, fake):
    created = budget_key(admin, max_budget="10.00")
    fake.set_behaviour(SECRET, Behaviour.bad_request("max_tokens is too large", status=400))
    client = sdk(server, created["key"])
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(**chat(), max_tokens=50)
    assert ledger(server, created["key"]) == (0, 0)


def test_an_exception_gives_the_reservation_and_the_place_back(admin, server, monkeypatch):
    created = budget_key(admin, max_budget="10.00", max_parallel_requests=1)
    gateway = server.app.extensions["keyrelay"]

    def broken():
        raise RuntimeError("a bug in route lookup")

    monkeypatch.setattr(gateway.routes, "table", broken)
    client = sdk(server, created["key"])
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(**chat(), max_tokens=50)
    assert "Traceback" not in failed.value.response.text
    assert ledger(server, created["key"]) == (0, 0)
    monkeypatch.undo()
    client.chat.completions.create(**chat(), max_tokens=5)  # its one parallel place is free


def _raw_request(server, key: str, body: dict) -> socket.socket:
    """Send a chat request on a raw socket and return it unread (the client then leaves)."""
    payload = json.dumps(body).encode()
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {key}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def test_a_client_that_leaves_before_the_answer_gives_the_reservation_back(admin, server, fake):
    created = budget_key(admin, max_budget="10.00")
    fake.set_behaviour(SECRET, Behaviour.slow(0.3))
    sock = _raw_request(server, created["key"], chat(max_tokens=50))
    wait_for(lambda: ledger(server, created["key"])[1] > 0, "the reservation")
    sock.close()  # gone before the upstream answered
    wait_for(lambda: ledger(server, created["key"])[1] == 0, "the reservation's release")
    spent, _ = ledger(server, created["key"])
    assert spent > 0  # the upstream answered and was paid: the request is booked at cost


def test_a_client_that_leaves_mid_stream_gives_the_reservation_back(admin, server, fake):
    created = budget_key(admin, max_budget="10.00")
    fake.set_behaviour(SECRET, Behaviour.slow(0.1, content="one two three four five six"))
    sock = _raw_request(server, created["key"], chat(max_tokens=50, stream=True))
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.status == 200
    assert response.read1(64)  # the first event arrived
    response.close()  # the socket's file goes too: the connection really closes
    sock.close()
    wait_for(lambda: ledger(server, created["key"])[1] == 0, "the reservation's release")
    server.app.extensions["keyrelay"].books.flush()
    (row,) = [r for r in admin.logs() if r["client_key_id"] == created["id"]]
    assert row["status_code"] == 499


def test_a_stream_never_read_gives_the_reservation_back(app, admin, server):
    """A WSGI server may close a response it never iterated (the client left between the
    headers and the first chunk): a generator that never started runs no `finally`."""
    created = budget_key(admin, max_budget="10.00")
    gateway = app.extensions["keyrelay"]
    caller = gateway.callers.resolve(created["key"])
    answer = gateway.chat("default", chat(max_tokens=50, stream=True), caller)
    assert ledger(server, created["key"])[1] > 0  # held while the stream is open
    answer.chunks.close()  # closed without a chunk read
    assert ledger(server, created["key"])[1] == 0
    gateway.books.flush()
    (row,) = [r for r in admin.logs() if r["client_key_id"] == created["id"]]
    assert row["status_code"] == 499


def test_refusal_names_what_was_reserved_and_why(admin, server):
    # The prompt's 8 tokens cost $0.008: with an answer token, more than $0.0085 can pay.
    created = budget_key(admin, max_budget="0.0085")
    client = sdk(server, created["key"])
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat())
    message = refused.value.body["message"]
    assert "$0.000000 spent and $0.000000 reserved" in message
    assert "needs at least $0.009000 (its prompt and one answer token)" in message
    assert "reserves up to $0.264000" in message
    assert "256 answer tokens" in message and "sets no max_tokens" in message
    assert "of $0.008500" in message


def test_a_budget_short_of_the_estimate_reserves_what_it_can_pay(admin, server, fake):
    """$0.100 pays the prompt (8 tokens) and 92 answer tokens, not the 256 a request
    without max_tokens reserves: it is admitted and the upstream is asked for 92."""
    created = budget_key(admin, max_budget="0.100")
    client = sdk(server, created["key"])
    client.chat.completions.create(**chat())
    assert fake.requests[-1].body["max_completion_tokens"] == 92
    client.chat.completions.create(**chat(), max_tokens=500)  # the client's own is lowered
    spent = 8_000  # the first answer: 8 tokens (the fake's count)
    assert fake.requests[-1].body["max_tokens"] == (100_000 - spent - 8_000) // 1_000


def test_requests_the_budget_refuses_take_no_place_in_the_rate_window(admin, server):
    created = budget_key(admin, max_budget="0.040", rpm_limit=2)
    client = sdk(server, created["key"])
    long_prompt = chat(content="word " * 100)  # its prompt alone costs more than the budget
    for _ in range(5):
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(**long_prompt)
        assert refused.value.body["code"] == "budget_exceeded"
    for _ in range(2):  # the window is untouched: both of its places are there
        client.chat.completions.create(**chat(), max_tokens=5)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(**chat(), max_tokens=5)
    assert limited.value.body["code"] == "rate_limit_exceeded"
