"""Issue 10, item 8: the usage chunk and an upstream's cost, trace headers on every
answer, one rule for which requests reach the request log, and keys a failed test marks."""

from __future__ import annotations

import json
import socket

import openai
import pytest

from tests.conftest import MASTER_KEY, chat
from tests.fake_upstream import Behaviour

SECRET = "sk-small-aaaaaaaaaaaaaaaa1111"
TRACE = ("x-keyrelay-request-id", "x-keyrelay-attempts", "x-keyrelay-provider")


@pytest.fixture
def key(admin, fake):
    return admin.add_key(SECRET, fake.base_url)


def post(http, server, body=None, raw=None, key=MASTER_KEY, path="/v1/chat/completions"):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else json.dumps(body).encode()
    return http.request("POST", f"{server.url}{path}", body=data, headers=headers)


# -- the usage chunk and an upstream's cost -------------------------------------------------


def test_a_litellm_usage_chunk_is_hidden_from_a_client_that_did_not_ask(client, key, fake):
    fake.set_behaviour(SECRET, Behaviour.litellm_style())
    raw = client.chat.completions.with_raw_response.create(**chat(), stream=True)
    body = raw.http_response.read().decode()
    assert '"cost"' not in body
    chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    # No usage reaches it: neither the usage chunk nor usage in a chunk with content (the
    # `"usage": null` of each chunk is the upstream's, relayed byte for byte).
    assert all(c.get("usage") is None for c in chunks)
    assert all(
        c["choices"] and c["choices"][0]["delta"] != {} or c["choices"][0].get("finish_reason")
        for c in chunks
    )
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "Hello from the fake upstream"


def test_a_litellm_usage_chunk_reaches_a_client_that_asked_without_the_cost(
    client, key, fake, admin, server
):
    fake.set_behaviour(SECRET, Behaviour.litellm_style())
    chunks = list(
        client.chat.completions.create(
            **chat(), stream=True, stream_options={"include_usage": True}
        )
    )
    usage = [c for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].usage.total_tokens == fake.usage_reported[0]["total_tokens"]
    dumped = [c.model_dump() for c in chunks]
    assert all("cost" not in c and "cost" not in (c.get("usage") or {}) for c in dumped)
    assert all(getattr(c, "cost", None) is None for c in chunks)
    server.app.extensions["keyrelay"].books.flush()
    (row,) = admin.logs()
    assert row["total_tokens"] == fake.usage_reported[0]["total_tokens"]
    assert row["usage_estimated"] is False


def test_an_upstream_cost_is_not_passed_on_without_streaming(server, http, key, fake):
    fake.set_behaviour(SECRET, Behaviour.litellm_style())
    response = post(http, server, chat())
    assert response.status == 200
    body = response.json()
    assert "cost" not in body and "cost" not in body["usage"]
    assert body["usage"]["total_tokens"] == fake.usage_reported[0]["total_tokens"]


# -- the trace headers on every answer ----------------------------------------------------


def test_a_401_carries_the_trace_headers(server, http, key):
    for response in (
        post(http, server, chat(), key=None),
        post(http, server, chat(), key="kr-not-a-key"),
        http.request("GET", f"{server.url}/v1/models"),
    ):
        assert response.status == 401
        assert response.headers["x-keyrelay-request-id"].startswith("req_")
        assert response.headers["x-keyrelay-attempts"] == "0"
        assert response.headers["x-keyrelay-provider"] == "none"


def test_a_refused_connection_answers_502_naming_the_provider(server, http, admin):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    admin.add_key(SECRET, f"http://127.0.0.1:{port}/v1")
    response = post(http, server, chat())
    assert response.status == 502
    assert response.headers["x-keyrelay-provider"] == "openai"
    assert response.headers["x-keyrelay-attempts"] == "1"
    assert response.headers["x-keyrelay-request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/chat/completions", b"{not json"),
        ("POST", "/v1/chat/completions", b"[1, 2]"),
        ("GET", "/v1/models", None),
        ("GET", "/v1/models/nope", None),
        ("GET", "/v1/nothing-here", None),
        ("POST", "/api/v1/chat/completions", b'{"model": "gpt-4o-mini"}'),
    ],
)
def test_every_proxy_answer_carries_the_trace_headers(server, http, key, method, path, body):
    headers = {"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"}
    response = http.request(method, f"{server.url}{path}", body=body, headers=headers)
    assert all(name in response.headers for name in TRACE), (response.status, response.headers)


# -- one rule for the request log ---------------------------------------------------------


@pytest.mark.both_databases
def test_every_authenticated_call_that_spends_tokens_gets_one_log_row(
    server, http, key, admin, settings
):
    """The rule (README): every authenticated POST to a proxy endpoint that spends tokens
    is logged once, whatever its answer; calls that spend nothing (model lists) and
    unauthenticated calls (401, logged to the server log only) are not."""
    limit = server.app.config["MAX_CONTENT_LENGTH"]
    answers = {
        "malformed": post(http, server, raw=b'{"model": "gpt-4o-mini", "messages": ['),
        "array": post(http, server, raw=b"[1, 2, 3]"),
        "too large": post(http, server, chat(content="x" * (limit + 10))),
        "bad field": post(http, server, chat(max_tokens=-5)),
        "unknown profile": http.request(
            "POST",
            f"{server.url}/v1/chat/completions",
            body=json.dumps(chat()).encode(),
            headers={"Authorization": f"Bearer {MASTER_KEY}", "X-Profile": "nobody"},
        ),
        "ok": post(http, server, chat()),
    }
    statuses = {name: response.status for name, response in answers.items()}
    assert statuses == {
        "malformed": 400,
        "array": 400,
        "too large": 413,
        "bad field": 400,
        "unknown profile": 404,
        "ok": 200,
    }
    # Not logged: no key, a wrong key, a model list.
    assert post(http, server, chat(), key=None).status == 401
    assert post(http, server, chat(), key="kr-wrong").status == 401
    models = http.request(
        "GET", f"{server.url}/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    assert models.status == 200
    server.app.extensions["keyrelay"].books.flush()
    rows = admin.logs(limit=100)
    logged = {row["request_id"]: row["status_code"] for row in rows}
    expected = {
        response.headers["x-keyrelay-request-id"]: response.status for response in answers.values()
    }
    assert logged == expected


# -- a key whose test fails with a 4xx -----------------------------------------------------


def test_a_key_whose_test_fails_with_a_client_error_is_marked(admin, fake):
    """LiteLLM answers a bad key with 400 "No connected db.": such a key is not trusted."""
    created = admin.add_key(SECRET, fake.base_url)
    fake.set_behaviour(SECRET, Behaviour.bad_request("No connected db.", status=400))
    result = admin.call("POST", f"/keys/{created['id']}/test").json()
    assert result["result"] == "error" and result["status_code"] == 400
    assert "No connected db." in result["error"]
    shown = admin.key(created["id"])
    assert shown["status"] == "auth_failed"
    assert "No connected db." in shown["last_error"]
    fake.set_behaviour(SECRET, Behaviour.ok())
    assert admin.call("POST", f"/keys/{created['id']}/test").json()["result"] == "ok"
    assert admin.key(created["id"])["status"] == "active"


def test_a_key_failing_its_test_is_not_used(admin, fake, client):
    bad = admin.add_key(SECRET, fake.base_url, name="bad")
    good = admin.add_key("sk-small-good-bbbbbbbbbbbbbb", fake.base_url, name="good")
    fake.set_behaviour(SECRET, Behaviour.bad_request("No connected db.", status=400))
    admin.call("POST", f"/keys/{bad['id']}/test")
    fake.reset()
    for _ in range(3):
        client.chat.completions.create(**chat())
    assert {r.secret for r in fake.requests} == {"sk-small-good-bbbbbbbbbbbbbb"}
    assert good["status"] == "active"


def test_openai_sdk_sees_the_log_rule_error_shape(server, key):
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(**chat(), max_tokens=-1)
    assert refused.value.body["param"] == "max_tokens"
    sdk.close()
