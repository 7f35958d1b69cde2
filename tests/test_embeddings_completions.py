"""Embeddings and legacy completions through the official OpenAI SDK: the same key pool,
failover, limits, budgets, accounting and pricing as chat."""

from __future__ import annotations

import base64
import struct

import openai
import pytest

from tests.conftest import MASTER_KEY
from tests.fake_upstream import Behaviour

SECRET = "sk-embed-aaaaaaaaaaaaaaaa1111"
SPARE = "sk-embed-bbbbbbbbbbbbbbbb2222"


@pytest.fixture
def key(admin, fake):
    return admin.add_key(SECRET, fake.base_url)


def logged(server, admin) -> list[dict]:
    server.app.extensions["keyrelay"].books.flush()
    return admin.logs()


def test_embeddings_of_a_string_a_list_and_token_ids(client, key, fake, server, admin):
    one = client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 8
    many = client.embeddings.create(model="text-embedding-3-small", input=["a b", "c d e"])
    assert [d.index for d in many.data] == [0, 1]
    ids = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3], [4, 5]])
    assert len(ids.data) == 2
    assert [r.path for r in fake.requests] == ["/v1/embeddings"] * 3
    assert fake.requests[2].body["input"] == [[1, 2, 3], [4, 5]]
    rows = logged(server, admin)
    assert [r["endpoint"] for r in rows] == ["embeddings"] * 3
    assert [r["total_tokens"] for r in rows] == [5, 5, 2]  # newest first, as reported
    assert all(not r["usage_estimated"] for r in rows)


def test_embeddings_base64_and_dimensions_pass_through(server, key, fake):
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=MASTER_KEY, max_retries=0)
    raw = sdk.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="hi", encoding_format="base64", dimensions=4
    )
    body = raw.http_response.json()
    vector = struct.unpack("<4f", base64.b64decode(body["data"][0]["embedding"]))
    assert len(vector) == 4
    assert fake.requests[0].body["dimensions"] == 4
    assert raw.headers["x-keyrelay-provider"] == "openai"
    sdk.close()


def test_embeddings_fail_over_to_the_next_key(client, admin, fake, server):
    admin.add_key(SECRET, fake.base_url, name="first")
    admin.add_key(SPARE, fake.base_url, name="second")
    fake.set_behaviour(SECRET, Behaviour.server_error(500))
    result = client.embeddings.create(model="text-embedding-3-small", input="x y")
    assert len(result.data) == 1
    assert [r.secret for r in fake.requests] == [SECRET, SPARE]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": [[]]}, "input"),  # "" and [""] are valid inputs
        ({"model": "m", "input": [1.5]}, "input"),
        ({"model": "m", "input": "x", "encoding_format": "hex"}, "encoding_format"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
    ],
)
def test_bad_embeddings_requests_are_400(server, http, key, fake, body, param):
    response = http.request(
        "POST",
        f"{server.url}/v1/embeddings",
        json=body,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert response.status == 400
    assert response.json()["error"]["param"] == param
    assert fake.requests == []


def test_completions_whole_and_streamed(client, key, fake, server, admin):
    whole = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once", max_tokens=20)
    assert whole.choices[0].text == "Hello from the fake upstream"
    pieces = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct", prompt="Once", max_tokens=20, stream=True
        )
    )
    assert "".join(c.choices[0].text for c in pieces if c.choices) == "Hello from the fake upstream"
    assert all(c.usage is None for c in pieces)  # the client did not ask for usage
    assert fake.requests[1].body["stream_options"] == {"include_usage": True}
    rows = logged(server, admin)
    assert [r["endpoint"] for r in rows] == ["completions", "completions"]
    assert [r["total_tokens"] for r in rows] == [6, 6]
    assert all(not r["usage_estimated"] for r in rows)


def test_completions_stream_with_usage_when_asked(client, key, fake):
    pieces = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="Once",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert pieces[-1].usage.total_tokens == fake.usage_reported[0]["total_tokens"]


def test_client_key_permissions_and_budgets_apply(server, admin, key, fake):
    created = admin.call(
        "POST",
        "/client-keys",
        {"name": "embedder", "models": ["text-embedding-3-small"], "max_budget": "1.00"},
    ).json()
    sdk = openai.OpenAI(base_url=f"{server.url}/v1", api_key=created["key"], max_retries=0)
    sdk.embeddings.create(model="text-embedding-3-small", input="ok")
    with pytest.raises(openai.PermissionDeniedError):
        sdk.completions.create(model="gpt-3.5-turbo-instruct", prompt="no")
    sdk.close()
    assert len(fake.requests) == 1
