"""The /v1 proxy through the official OpenAI SDK and raw HTTP: happy paths and bad input."""

from __future__ import annotations

import json
import time

import openai
import pytest

from tests.conftest import MASTER_KEY, chat
from tests.fake_upstream import Behaviour, count_prompt_tokens


@pytest.fixture
def key(admin, fake):
    return admin.add_key("sk-test-aaaaaaaaaaaaaaaa1111", fake.base_url)


@pytest.mark.both_databases
def test_chat_completion_through_the_sdk(client, key, fake):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello from the fake upstream"
    assert completion.usage.total_tokens == fake.usage_reported[0]["total_tokens"]
    assert raw.headers["x-keyrelay-request-id"].startswith("req_")
    assert raw.headers["x-keyrelay-attempts"] == "1"
    assert raw.headers["x-keyrelay-provider"] == "openai"
    assert "sk-test" not in str(raw.headers)
    # The upstream got the client's body and the provider key, not the master key.
    (sent,) = fake.requests
    assert sent.secret == "sk-test-aaaaaaaaaaaaaaaa1111"
    assert sent.body["messages"] == [{"role": "user", "content": "Say hello"}]


def test_streaming_through_the_sdk_hides_the_usage_chunk(client, key, fake):
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake upstream"
    # The client did not ask for usage: no chunk without choices reaches it...
    assert all(c.choices for c in chunks)
    # ...though KeyRelay asked the upstream for it, to count the tokens.
    assert fake.requests[0].body["stream_options"] == {"include_usage": True}
    assert len(fake.usage_reported) == 1


def test_streaming_with_include_usage_passes_the_usage_chunk(client, key, fake):
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == fake.usage_reported[0]["total_tokens"]


def test_stream_is_relayed_chunk_by_chunk(client, key, fake):
    fake.set_behaviour(key_secret(key), Behaviour.slow(delay=0.3, content="one two three"))
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    arrivals = [time.monotonic() - started for chunk in stream if chunk.choices]
    # Events 0.3 s apart upstream arrive spread out, not all at the end.
    assert arrivals[0] < 0.9
    assert arrivals[-1] > 1.2
    assert arrivals[-1] - arrivals[0] > 0.8


def key_secret(key: dict) -> str:
    return "sk-test-aaaaaaaaaaaaaaaa1111"


def test_api_v1_prefix_serves_the_same_api(server, key, http):
    response = http.request(
        "POST",
        f"{server.url}/api/v1/chat/completions",
        json=chat(),
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert response.status == 200
    assert response.json()["object"] == "chat.completion"
    models = http.request(
        "GET", f"{server.url}/api/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    assert models.status == 200


def test_models_list_and_get(client, admin, fake):
    admin.add_key("sk-m-1111111111111111", fake.base_url, models=["gpt-4o", "gpt-4o-mini"])
    ids = [m.id for m in client.models.list()]
    assert ids == ["gpt-4o", "gpt-4o-mini"]
    model = client.models.retrieve("gpt-4o")
    assert model.owned_by == "openai"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert "GET /v1/models" in err.value.message


def test_wildcard_key_lists_models_discovered_by_its_test(client, admin, fake, key):
    assert [m.id for m in client.models.list()] == []
    assert admin.call("POST", f"/keys/{key['id']}/test").json()["result"] == "ok"
    assert [m.id for m in client.models.list()] == ["gpt-4o", "gpt-4o-mini"]


@pytest.mark.both_databases
def test_x_profile_selects_the_profile(server, admin, fake, http):
    admin.add_key("sk-team-a-11111111111111", fake.base_url, profile="team-a")
    admin.add_key("sk-default-111111111111", fake.base_url)
    response = http.request(
        "POST",
        f"{server.url}/v1/chat/completions",
        json=chat(),
        headers={"Authorization": f"Bearer {MASTER_KEY}", "X-Profile": "team-a"},
    )
    assert response.status == 200
    assert fake.requests[0].secret == "sk-team-a-11111111111111"


def post(http, server, body=None, raw=None, headers=None):
    headers = {"Authorization": f"Bearer {MASTER_KEY}", **(headers or {})}
    if raw is None:
        raw = json.dumps(body).encode()
    return http.request("POST", f"{server.url}/v1/chat/completions", body=raw, headers=headers)


def assert_openai_error(response, status: int, *, param=None, words=()):
    assert response.status == status, response.data
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert "Traceback" not in response.data.decode()
    for word in words:
        assert word in error["message"]
    if param is not None:
        assert error["param"] == param
    return error


@pytest.mark.parametrize(
    ("raw", "param", "words"),
    [
        (b"{not json", None, ["not valid JSON"]),
        (b"[1, 2]", None, ["JSON object"]),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), "model", ["model"]),
        (json.dumps({"model": 42, "messages": []}).encode(), "model", ["non-empty string"]),
        (json.dumps({"model": "gpt-4o-mini"}).encode(), "messages", ["messages"]),
        (json.dumps({"model": "gpt-4o-mini", "messages": "hi"}).encode(), "messages", ["array"]),
        (
            json.dumps({"model": "gpt-4o-mini", "messages": [{"content": "x"}]}).encode(),
            "messages[0].role",
            ["role"],
        ),
        (json.dumps(chat(stream="yes")).encode(), "stream", ["boolean"]),
        (json.dumps(chat(temperature="hot")).encode(), "temperature", ["number"]),
        (json.dumps(chat(max_tokens=True)).encode(), "max_tokens", ["integer"]),
    ],
)
def test_bad_bodies_get_a_400_naming_the_problem(server, http, key, fake, raw, param, words):
    assert_openai_error(post(http, server, raw=raw), 400, param=param, words=words)
    assert fake.requests == []


def test_ten_megabyte_body_is_413(server, http, key, fake):
    body = chat(content="x" * (10 * 1024 * 1024))
    error = assert_openai_error(post(http, server, body), 413, words=["KEYRELAY_MAX_BODY_BYTES"])
    assert error["code"] == "request_too_large"
    assert fake.requests == []


def test_unknown_model_is_404(server, http, admin, fake):
    admin.add_key("sk-only-mini-1111111111", fake.base_url, models=["gpt-4o-mini"])
    error = assert_openai_error(
        post(http, server, chat(model="gpt-5-ultra")), 404, param="model", words=["gpt-5-ultra"]
    )
    assert error["code"] == "model_not_found"


def test_sdk_sees_typed_errors(client, key):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    bad = openai.OpenAI(base_url=str(client.base_url), api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    bad.close()
    assert "master key" in err.value.message


def test_missing_key_and_unknown_profile(server, http, key):
    response = http.request("POST", f"{server.url}/v1/chat/completions", json=chat())
    assert_openai_error(response, 401, words=["Authorization"])
    response = post(http, server, chat(), headers={"X-Profile": "nobody"})
    assert_openai_error(response, 404, words=["nobody", "X-Profile"])


def test_unknown_path_and_method_are_openai_errors(server, http):
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    response = http.request("GET", f"{server.url}/v1/nothing-here", headers=headers)
    assert_openai_error(response, 404, words=["/v1/nothing-here"])
    response = http.request("GET", f"{server.url}/v1/chat/completions", headers=headers)
    assert_openai_error(response, 405)


def test_prompt_tokens_come_from_the_upstream(client, key, fake):
    messages = [{"role": "user", "content": "a fairly long question " * 10}]
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert completion.usage.prompt_tokens == count_prompt_tokens(messages)
